"""Which API an answer speaks, told by its shape, and which of its events carry output.

For an answer on a path that names no API (a gateway's own path), the first event or object
tells: an event named ``response.*`` is OpenAI Responses, ``message_start`` / ``content_block_*``
Anthropic Messages, a ``chat.completion(.chunk)`` object (or one with ``choices``) Chat
Completions, an object with ``done`` and a ``message`` or ``response`` Ollama.

Output is what a person waits for: text, thinking, or a piece of a tool call (its name, its
arguments). A role-only first chunk, ``message_start``, ``response.created``, a ping or a usage
chunk carry none, so the time to first token is not the time to first byte.
"""

from __future__ import annotations

import json
from typing import Any

from desktop.inspector.sse import Event

__all__ = ["api_of_event", "api_of_object", "carries_output"]

_MESSAGES_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta", "ping"})
_RESPONSES_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.function_call_arguments.delta",
    }
)


def api_of_event(events: list[Event]) -> str:
    """The API the first events of a stream speak, or "" when they say none known here."""
    for event in events[:4]:
        if event.name.startswith("response."):
            return "openai-responses"
        if event.name in _MESSAGES_EVENTS:
            return "anthropic-messages"
        data = _object(event.data)
        kind = data.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            return "openai-responses"
        if kind in _MESSAGES_EVENTS:
            return "anthropic-messages"
        if data.get("object") == "chat.completion.chunk" or "choices" in data:
            return "openai-chat"
    return ""


def api_of_object(body: dict[str, Any]) -> str:
    """The API a whole answer (or an NDJSON line) speaks, or ""."""
    if body.get("object") in ("chat.completion", "chat.completion.chunk") or "choices" in body:
        return "openai-chat"
    if body.get("object") == "response":
        return "openai-responses"
    if body.get("type") == "message" and isinstance(body.get("content"), list):
        return "anthropic-messages"
    if "done" in body and ("message" in body or "response" in body):
        return "ollama"
    return ""


def carries_output(api: str, item: Event | str) -> bool:
    """True when this event (or NDJSON line) of an ``api`` stream carries output."""
    data = _object(item.data if isinstance(item, Event) else item)
    if not data:
        return False
    if api == "openai-responses":
        kind = data.get("type", item.name if isinstance(item, Event) else "")
        if kind in _RESPONSES_DELTAS:
            return bool(data.get("delta"))
        item_added = data.get("item")
        return (
            kind == "response.output_item.added"
            and isinstance(item_added, dict)
            and item_added.get("type") == "function_call"
        )
    if api == "anthropic-messages":
        delta, block = data.get("delta"), data.get("content_block")
        if isinstance(delta, dict) and data.get("type", "content_block_delta") == "content_block_delta":
            return any(
                isinstance(delta.get(k), str) and delta[k] for k in ("text", "thinking", "partial_json")
            )
        return isinstance(block, dict) and (
            block.get("type") in ("tool_use", "server_tool_use") or bool(block.get("text"))
        )
    if api == "ollama":
        message = data.get("message")
        parts = [data.get("response"), data.get("thinking")]
        if isinstance(message, dict):
            parts += [message.get("content"), message.get("thinking"), message.get("tool_calls")]
        return any(parts)
    for choice in data.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(
            delta.get(k) for k in ("content", "reasoning_content", "reasoning", "tool_calls")
        ):
            return True
    return False


def _object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
