"""The inspector's event-stream reader: the events a browser would see, however the bytes are cut.

A person reads the reassembled answer; if a reader lost an event cut across two reads, or took a
comment for data, the text shown would not be what the tool got.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from desktop.inspector.sse import Event, EventReader

STREAM = (
    b": keep-alive\r\n\r\n"
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: first line\ndata:second line\n\n"
    b"id: 7\rdata: caf\xc3\xa9 \xe2\x82\xac\r\r"
    b"data\n\n"
    b"event: ping\n\n"  # no data: not dispatched
    b"data: unfinished"  # no blank line before the end: dropped
)
EVENTS = [
    Event("message_start", '{"a": 1}'),
    Event("message", "first line\nsecond line"),
    Event("message", "café €", "7"),
    Event("message", "", "7"),
]


def read(pieces: list[bytes]) -> list[Event]:
    reader = EventReader()
    return [event for piece in pieces for event in reader.feed(piece)]


def test_the_stream_read_whole_gives_the_events_a_browser_dispatches() -> None:
    assert read([STREAM]) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_cutting_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    """CRLF split between reads, a UTF-8 character split between reads, an event in pieces."""
    points = [0, *sorted(cuts), len(STREAM)]
    assert read([STREAM[a:b] for a, b in itertools.pairwise(points)]) == EVENTS


def test_a_byte_at_a_time_gives_the_same_events() -> None:
    assert read([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS
