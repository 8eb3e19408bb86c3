"""A streamed Anthropic Messages answer put back together (``"stream": true``).

The events (../shared notes, "How LLM APIs stream"): ``message_start`` brings the model and the
input usage (with cache reads and writes); ``content_block_start`` opens block ``index`` (text,
tool_use with its ``id`` and ``name``, thinking); ``content_block_delta`` adds to it
(``text_delta``, ``input_json_delta`` pieces of the tool's input to join, ``thinking_delta``;
``signature_delta`` carries nothing to show); ``message_delta`` brings the stop reason and the
output tokens so far; ``message_stop`` ends it; ``ping`` is a keep-alive; ``error`` carries
the error (``overloaded_error`` ...).

Not streamed, the answer is one ``message`` object (:func:`message_json`): its ``content``
blocks whole (a tool_use block's ``input`` an object), ``stop_reason``, ``usage``, ``model``;
an error answers ``{"type": "error", "error": {...}}``.

Pure: events in, an :class:`~desktop.inspector.answer.Answer` out; an event whose data is not a
JSON object is counted and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from desktop.inspector.answer import Answer, ToolCall, json_events
from desktop.inspector.sse import Event

__all__ = ["message_json", "messages_answer"]


def messages_answer(events: Iterable[Event]) -> Answer:
    """The answer the Messages events in ``events`` make."""
    answer = Answer()
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    for kind, data in json_events(events, answer):
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            if isinstance(message.get("model"), str):
                answer.model = message["model"]
            if isinstance(message.get("usage"), dict):
                usage.update(message["usage"])
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            blocks[_index(data)] = {**data["content_block"], "_text": [], "_json": []}
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            block = blocks.setdefault(_index(data), {"type": "text", "_text": [], "_json": []})
            delta = data["delta"]
            for key, place in (("text", "_text"), ("thinking", "_text"), ("partial_json", "_json")):
                if isinstance(delta.get(key), str):
                    block[place].append(delta[key])
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                answer.finish_reason = delta["stop_reason"]
            if isinstance(data.get("usage"), dict):
                usage.update(data["usage"])
        elif kind == "message_stop":
            answer.done = True
        elif kind == "error":
            answer.error = data.get("error", data)
    text: list[str] = []
    thinking: list[str] = []
    for index in sorted(blocks):
        block = blocks[index]
        if block.get("type") == "text":
            text.append("".join(block["_text"]))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            thinking.append("".join(block["_text"]))
        elif block.get("type") in ("tool_use", "server_tool_use"):
            # The input streams as JSON text; a block that streamed none has it whole at its start.
            arguments = "".join(block["_json"]) or json.dumps(block.get("input") or {})
            answer.tool_calls.append(
                ToolCall(index, str(block.get("id", "")), str(block.get("name", "")), arguments)
            )
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    answer.usage = usage or None
    return answer


def _index(data: dict[str, Any]) -> int:
    index = data.get("index", 0)
    return index if isinstance(index, int) else 0


def message_json(message: dict[str, Any]) -> Answer:
    """The answer a whole (not streamed) message object gives."""
    answer = Answer(done=True)
    if message.get("type") == "error" or "error" in message:
        answer.error = message.get("error", message)
    if isinstance(message.get("model"), str):
        answer.model = message["model"]
    if isinstance(message.get("stop_reason"), str):
        answer.finish_reason = message["stop_reason"]
    if isinstance(message.get("usage"), dict):
        answer.usage = message["usage"]
    text: list[str] = []
    thinking: list[str] = []
    for index, block in enumerate(message.get("content") or ()):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind in ("tool_use", "server_tool_use"):
            arguments = json.dumps(block.get("input") or {})
            answer.tool_calls.append(
                ToolCall(index, str(block.get("id", "")), str(block.get("name", "")), arguments)
            )
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    return answer
