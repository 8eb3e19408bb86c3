"""A streamed OpenAI Responses answer put back together (``POST /v1/responses``, ``"stream": true``).

Named events (../shared notes, "How LLM APIs stream"): ``response.output_text.delta`` (a ``delta``
of text), ``response.reasoning_summary_text.delta`` (of the reasoning summary),
``response.output_item.added`` (an item; a ``function_call`` brings its ``call_id`` and
``name``), ``response.function_call_arguments.delta`` (pieces of its arguments, by
``output_index``), ``response.completed`` / ``response.incomplete`` / ``response.failed`` (the
whole response with its ``usage``, ``model`` and ``status``), and ``error``.

Not streamed, the answer is the response object itself (:func:`responses_json`): its ``output``
items (a ``message`` with ``output_text`` parts, a ``function_call`` with its ``arguments``
whole, a ``reasoning`` item with its ``summary``), ``status``, ``model``, ``usage``, ``error``.

Pure: events in, an Answer out; an event whose data is not a JSON object is counted and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from desktop.inspector.answer import Answer, ToolCall, json_events
from desktop.inspector.sse import Event

__all__ = ["responses_answer", "responses_json"]

_ENDINGS = ("response.completed", "response.incomplete", "response.failed")


def responses_answer(events: Iterable[Event]) -> Answer:
    """The answer the Responses events in ``events`` make."""
    answer = Answer()
    text: list[str] = []
    thinking: list[str] = []
    calls: dict[int, ToolCall] = {}
    for kind, data in json_events(events, answer):
        if kind == "response.output_text.delta" and isinstance(data.get("delta"), str):
            text.append(data["delta"])
        elif kind == "response.reasoning_summary_text.delta" and isinstance(data.get("delta"), str):
            thinking.append(data["delta"])
        elif kind == "response.output_item.added" and isinstance(data.get("item"), dict):
            item = data["item"]
            if item.get("type") == "function_call":
                index = _index(data)
                calls[index] = ToolCall(
                    index,
                    str(item.get("call_id", "")),
                    str(item.get("name", "")),
                    str(item.get("arguments", "")),
                )
        elif kind == "response.function_call_arguments.delta" and isinstance(data.get("delta"), str):
            calls.setdefault(_index(data), ToolCall(_index(data))).arguments += data["delta"]
        elif kind in _ENDINGS and isinstance(data.get("response"), dict):
            _take_response(answer, data["response"])
        elif kind == "error":
            answer.error = data.get("error", data)
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    answer.tool_calls = [calls[index] for index in sorted(calls)]
    return answer


def _take_response(answer: Answer, response: dict[str, Any]) -> None:
    answer.done = True
    if isinstance(response.get("model"), str):
        answer.model = response["model"]
    if isinstance(response.get("status"), str):
        answer.finish_reason = response["status"]
    if isinstance(response.get("usage"), dict):
        answer.usage = response["usage"]
    if response.get("error") is not None:
        answer.error = response["error"]


def _index(data: dict[str, Any]) -> int:
    index = data.get("output_index", 0)
    return index if isinstance(index, int) else 0


def responses_json(response: dict[str, Any]) -> Answer:
    """The answer a whole (not streamed) response object gives."""
    answer = Answer()
    _take_response(answer, response)
    text: list[str] = []
    thinking: list[str] = []
    for index, item in enumerate(response.get("output") or ()):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "function_call":
            answer.tool_calls.append(
                ToolCall(
                    index,
                    str(item.get("call_id", "")),
                    str(item.get("name", "")),
                    str(item.get("arguments", "")),
                )
            )
        elif kind == "message":
            text += _part_texts(item.get("content"), "output_text")
        elif kind == "reasoning":
            thinking += _part_texts(item.get("summary"), "summary_text")
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    return answer


def _part_texts(parts: Any, kind: str) -> list[str]:
    """The texts of the parts of ``kind`` in an output item's list of parts."""
    if not isinstance(parts, list):
        return []
    return [
        part["text"]
        for part in parts
        if isinstance(part, dict) and part.get("type") == kind and isinstance(part.get("text"), str)
    ]
