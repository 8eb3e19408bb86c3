"""A streamed OpenAI Chat Completions answer put back together (``"stream": true``).

Each ``data:`` event is a ``chat.completion.chunk`` (../shared notes, "How LLM APIs stream"):
``choices[i].delta.content`` fragments make the text, ``delta.tool_calls[j]`` fragments make
each tool call (its ``index`` says which; the first fragment brings ``id`` and
``function.name``, the rest ``function.arguments`` pieces to join), ``finish_reason`` ends a
choice, and a final chunk with empty ``choices`` carries ``usage`` when the request asked for it.
``data: [DONE]`` ends the stream; an ``{"error": ...}`` object is kept as the error. Servers
that stream a model's reasoning put it in ``delta.reasoning_content`` or ``delta.reasoning``.

Not streamed, the answer is one ``chat.completion`` object (:func:`chat_completion_json`):
``choices[i].message`` with ``content`` and ``tool_calls`` whole, ``finish_reason``, ``usage``.

Pure: events in, an :class:`Answer` out; a chunk that is not JSON or not an object is counted
and skipped rather than failing the whole answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from desktop.inspector.answer import Answer, ToolCall
from desktop.inspector.sse import Event

__all__ = ["Answer", "ToolCall", "chat_completion_answer", "chat_completion_json"]


def chat_completion_answer(events: Iterable[Event]) -> Answer:
    """The answer the chunks in ``events`` make."""
    answer = Answer()
    calls: dict[int, ToolCall] = {}
    text: list[str] = []
    thinking: list[str] = []
    for event in events:
        if event.data.strip() == "[DONE]":
            answer.done = True
            continue
        try:
            chunk = json.loads(event.data)
        except (ValueError, RecursionError):
            answer.unreadable += 1
            continue
        if not isinstance(chunk, dict):
            answer.unreadable += 1
            continue
        _take_members(answer, chunk)
        for choice in _first_choices(answer, chunk.get("choices")):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _take_delta(delta, text, thinking, calls)
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    answer.tool_calls = [calls[index] for index in sorted(calls)]
    return answer


def _take_members(answer: Answer, data: dict[str, Any]) -> None:
    """The error, model and usage a chunk or a whole completion carries."""
    if data.get("error") is not None:
        answer.error = data["error"]
    if isinstance(data.get("model"), str):
        answer.model = data["model"]
    if isinstance(data.get("usage"), dict):
        answer.usage = data["usage"]


def _first_choices(answer: Answer, choices: Any) -> Iterator[dict[str, Any]]:
    """The first choice's entries in ``choices`` (its finish reason taken); others counted."""
    for choice in choices or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("index", 0) != 0:
            answer.other_choices += 1
            continue
        if choice.get("finish_reason"):
            answer.finish_reason = choice["finish_reason"]
        yield choice


def _take_delta(
    delta: dict[str, Any], text: list[str], thinking: list[str], calls: dict[int, ToolCall]
) -> None:
    content = delta.get("content")
    if isinstance(content, str):
        text.append(content)
    for key in ("reasoning_content", "reasoning"):
        reasoning = delta.get(key)
        if isinstance(reasoning, str):
            thinking.append(reasoning)
    for fragment in delta.get("tool_calls") or ():
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index", len(calls))
        if not isinstance(index, int):
            continue
        call = calls.setdefault(index, ToolCall(index))
        if isinstance(fragment.get("id"), str):
            call.id = fragment["id"]
        function = fragment.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                call.name += function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments += function["arguments"]


def chat_completion_json(body: dict[str, Any]) -> Answer:
    """The answer a whole (not streamed) ``chat.completion`` object gives."""
    answer = Answer(done=True)
    _take_members(answer, body)
    text: list[str] = []
    thinking: list[str] = []
    calls: dict[int, ToolCall] = {}
    for choice in _first_choices(answer, body.get("choices")):
        message = choice.get("message")
        if isinstance(message, dict):
            # A whole message reads as one delta whose tool calls are in order.
            whole = {
                **message,
                "tool_calls": [
                    {"index": index, **call}
                    for index, call in enumerate(message.get("tool_calls") or ())
                    if isinstance(call, dict)
                ],
            }
            _take_delta(whole, text, thinking, calls)
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    answer.tool_calls = [calls[index] for index in sorted(calls)]
    return answer
