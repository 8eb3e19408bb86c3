"""A streamed Ollama answer put back together: its native API (``/api/chat``, ``/api/generate``)
streams newline-delimited JSON (``application/x-ndjson``), not SSE.

Each line is an object: ``message.content`` (chat; ``message.thinking`` for a thinking model,
``message.tool_calls`` with each ``function``'s ``name`` and ``arguments`` as an object) or
``response`` (generate); the last has ``"done": true`` with ``done_reason``,
``prompt_eval_count`` (input tokens), ``eval_count`` (output tokens) and ``eval_duration`` (ns).
Ollama's ``/v1/...`` endpoints speak OpenAI's shapes instead (openai.py).

Not streamed (``"stream": false``), the answer is one such object, the last line's shape with
the whole text (:func:`ollama_json`).

Pure: bytes in any pieces to lines (:class:`LineReader`), lines to an Answer.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

from desktop.inspector.answer import Answer, ToolCall

__all__ = ["LineReader", "ndjson_answer", "ollama_json"]


class LineReader:
    """Feed the stream's bytes in any pieces; each ``feed`` returns the lines they completed
    (without their line end; empty lines skipped)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._rest = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._rest + self._decoder.decode(chunk)
        *lines, self._rest = text.split("\n")
        return [line.rstrip("\r") for line in lines if line.strip()]

    def close(self) -> list[str]:
        """The last line, if the stream ended without its line end."""
        rest, self._rest = self._rest + self._decoder.decode(b"", final=True), ""
        return [rest.rstrip("\r")] if rest.strip() else []


def ndjson_answer(lines: Iterable[str]) -> Answer:
    """The answer the NDJSON ``lines`` of an Ollama chat or generate stream make."""
    answer = Answer()
    return _parts_answer(_parts(lines, answer), answer)


def ollama_json(body: dict[str, Any]) -> Answer:
    """The answer a whole (not streamed) chat or generate object gives."""
    return _parts_answer([body], Answer())


def _parts(lines: Iterable[str], answer: Answer) -> Iterator[dict[str, Any]]:
    """Each line's JSON object; a line that is none is counted in ``answer.unreadable``."""
    for line in lines:
        try:
            part = json.loads(line)
        except (ValueError, RecursionError):
            part = None
        if not isinstance(part, dict):
            answer.unreadable += 1
            continue
        yield part


def _parts_answer(parts: Iterable[dict[str, Any]], answer: Answer) -> Answer:
    text: list[str] = []
    thinking: list[str] = []
    for part in parts:
        if isinstance(part.get("model"), str):
            answer.model = part["model"]
        if part.get("error") is not None:
            answer.error = part["error"]
        message = part.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                text.append(message["content"])
            if isinstance(message.get("thinking"), str):
                thinking.append(message["thinking"])
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    arguments = function.get("arguments", {})
                    answer.tool_calls.append(
                        ToolCall(
                            len(answer.tool_calls),
                            str(call.get("id", "")),
                            str(function.get("name", "")),
                            arguments if isinstance(arguments, str) else json.dumps(arguments),
                        )
                    )
        if isinstance(part.get("response"), str):
            text.append(part["response"])
        if isinstance(part.get("thinking"), str):
            thinking.append(part["thinking"])
        if part.get("done") is True:
            answer.done = True
            if isinstance(part.get("done_reason"), str):
                answer.finish_reason = part["done_reason"]
            counts = {
                name: part[name]
                for name in ("prompt_eval_count", "eval_count", "eval_duration", "total_duration")
                if isinstance(part.get(name), int)
            }
            answer.usage = counts or None
    answer.text = "".join(text)
    answer.thinking = "".join(thinking)
    return answer
