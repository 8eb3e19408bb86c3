"""A streamed answer's events (SSE) or lines (NDJSON) read from its decoded pieces, and the loop
time of the first that carried output.

Read whole for the page (every event: the text shown). Read for facts (model, tokens, time to
first token), which the store does on the proxy's own loop at each exchange's end, only its
head, up to the first output, and its last events, where the usage is (OpenAI's usage chunk
and [DONE], Anthropic's message_delta and message_stop, Responses' response.completed,
Ollama's last line): an answer of 8,000 tokens is over a million characters, and reading each
event of it held the loop about 100 ms, longer than many a request takes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from desktop.inspector.ollama import LineReader
from desktop.inspector.outputs import api_of_event, api_of_object, carries_output
from desktop.inspector.sse import EventReader

__all__ = ["TAIL_ITEMS", "read_stream"]

# Events (or lines) read at the end of a stream for its facts. Usage comes in the last two to
# four (a finish chunk, the usage chunk, [DONE]; message_delta, message_stop, a ping).
TAIL_ITEMS = 8
_SSE_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")

Pieces = Iterator[tuple[bytes, float]]


def read_stream(api: str, mode: str, pieces: Pieces, *, whole: bool) -> tuple[str, list[Any], float | None]:
    """(the API, the events or lines, the loop time of the first one with output) of a stream
    in ``mode`` "sse" or "ndjson"; the API "" when neither the path nor the stream told it.
    Not ``whole``: the events up to the first output and the last TAIL_ITEMS only."""
    reader: EventReader | LineReader = EventReader() if mode == "sse" else LineReader()
    items: list[Any] = []
    checked = 0
    first_output_at = None
    at = 0.0
    for data, at in pieces:
        found = reader.feed(data)
        if not found:
            continue
        items += found
        if not api:
            api = api_of_event(items) if mode == "sse" else api_of_object(_first_object(items))
        if api and first_output_at is None:
            # From the first event on once the API is known (an unknown path's first events
            # tell it).
            if any(carries_output(api, item) for item in items[checked:]):
                first_output_at = at
            checked = len(items)
        if first_output_at is not None and not whole:
            reader = _read_tail(reader, mode, b"".join(data for data, _ in pieces), items)
            break
    if isinstance(reader, LineReader):
        items += reader.close()  # a last line without its line end
        if not api:
            api = api_of_object(_first_object(items))
    return api, items, first_output_at


def _read_tail(
    reader: EventReader | LineReader, mode: str, rest: bytes, items: list[Any]
) -> EventReader | LineReader:
    """Adds the last TAIL_ITEMS events of ``rest`` (all of it, if it holds fewer) to ``items``;
    returns the reader that read them, for the line a stream may end without."""
    start = _start_of_last(rest, mode)
    if start is None:
        items += reader.feed(rest)  # a short rest: read on from where the head stopped
        return reader
    tail: EventReader | LineReader = EventReader() if mode == "sse" else LineReader()
    items += tail.feed(rest[start:])
    return tail


def _start_of_last(rest: bytes, mode: str) -> int | None:
    """Where the last TAIL_ITEMS events (or lines) of ``rest`` begin, just after the blank
    line (line end) before them; None when ``rest`` holds no more than that."""
    # The blank line as this stream writes it (a stream keeps to one kind of line end).
    mark = max(_SSE_ENDS, key=rest.rfind) if mode == "sse" else b"\n"
    end = len(rest)
    for _ in range(TAIL_ITEMS + 1):  # the last one may be unfinished, or end the stream
        end = rest.rfind(mark, 0, end)
        if end < 0:
            return None
    return end + len(mark)


def _first_object(lines: list[str]) -> dict[str, Any]:
    if not lines:
        return {}
    try:
        part = json.loads(lines[0])
    except (ValueError, RecursionError):
        return {}
    return part if isinstance(part, dict) else {}
