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
from dataclasses import dataclass

__all__ = ["Event", "EventReader"]


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
        start = 0
        for index, char in enumerate(text):
            if char not in "\r\n":
                continue
            if char == "\n" and self._after_cr and index == start:
                # The LF of a CRLF whose CR ended the line already.
                self._after_cr = False
                start = index + 1
                continue
            self._line += text[start:index]
            self._end_line(events)
            self._after_cr = char == "\r"
            start = index + 1
        if start < len(text):
            self._line += text[start:]
            self._after_cr = False
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
