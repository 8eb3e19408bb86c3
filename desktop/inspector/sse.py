"""Server-sent events read as the WHATWG HTML standard reads them ("Server-sent events",
"Interpreting an event stream"), a chunk at a time, whatever the chunk boundaries.

Lines end with CRLF, LF or CR (a CR at the end of one chunk may be the first half of a CRLF in
the next); a line starting with ':' is a comment; ``data`` lines of one event are joined with
LF; a blank line dispatches the event, unless it has no data; an event left unfinished when the
stream ends is dropped, as a browser drops it. Bytes are UTF-8, invalid ones replaced.

Pure: no I/O, no time. The inspector feeds it the captured chunks of an answer.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["Event", "EventReader"]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its type (``message`` unless an ``event`` field named one), its
    data, and the last event id seen (None before any)."""

    name: str
    data: str
    id: str | None = None


class EventReader:
    """Feed the stream's bytes in any pieces; each ``feed`` returns the events they completed."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""  # the line read so far
        self._after_cr = False  # the last character was a CR: an LF next ends nothing new
        self._name = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completes, in order."""
        events: list[Event] = []
        text = self._decoder.decode(chunk)
        if not text:
            return events  # the start of a character split across reads: nothing changed
        start = 1 if self._after_cr and text[0] == "\n" else 0  # the LF of a CRLF cut in two
        # Found by the regex engine, not a Python loop over each character: an 8,000-token
        # answer is over a million characters, read back on the proxy's loop.
        for line_end in _LINE_END.finditer(text, start):
            self._line += text[start : line_end.start()]
            self._end_line(events)
            start = line_end.end()
        self._line += text[start:]
        # A CR ending this read may be the first half of a CRLF whose LF starts the next.
        self._after_cr = start == len(text) and text[-1] == "\r"
        return events

    def _end_line(self, events: list[Event]) -> None:
        line, self._line = self._line, ""
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return  # a comment
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields change nothing a reader of the answer needs.

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            events.append(Event(self._name or "message", "\n".join(self._data), self._last_id))
        self._name = ""
        self._data = []
