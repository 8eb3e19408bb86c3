"""A streamed OpenAI Responses answer put back together (``POST /v1/responses``, ``"stream": true``).

Named events (../shared notes, "How LLM APIs stream"): ``response.output_text.delta`` (a ``delta``
of text), ``response.reasoning_summary_text.delta`` (of the reasoning summary),
``response.output_item.added`` (an item; a ``function_call`` brings its ``call_id`` and
``name``), ``response.function_call_arguments.delta`` (pieces of its arguments, by
``output_index``), ``response.completed`` / ``response.incomplete`` / ``response.failed`` (the
whole response with its ``usage``, ``model`` and ``status``), and ``error``.

Pure: events in, an Answer out; an event whose data is not a JSON object is counted and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from desktop.inspector.answer import Answer, ToolCall, json_events
from desktop.inspector.sse import Event

__all__ = ["responses_answer"]

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
