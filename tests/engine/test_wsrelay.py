"""The relay's frame tracker: it must know where every frame ends however the bytes are split,
or a close frame of the proxy's would land inside a message and corrupt it.

Frames are built with the ``websockets`` library's own framing (not ours), masked and
unmasked, with the 7-bit, 16-bit and 64-bit length forms, and cut into reads at random points.
"""

from __future__ import annotations

import itertools
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode

from desktop.engine.wsrelay import FrameTracker, close_frame

# Payload sizes around each length-encoding edge (125 / 126..65535 / 65536+).
SIZES = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000])
OPCODES = st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG])


def encode(opcode: Opcode, size: int, *, masked: bool) -> bytes:
    data = b"x" * size if opcode is not Opcode.TEXT else ("é" * (size // 2)).encode()
    if opcode in (Opcode.PING, Opcode.PONG):
        data = data[:125]
    return Frame(opcode, data).serialize(mask=masked, extensions=[])


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.tuples(OPCODES, SIZES), min_size=1, max_size=6),
    masked=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=8),
)
def test_boundaries_are_found_however_the_stream_is_cut(
    frames: list[tuple[Opcode, int]], masked: bool, cuts: list[int]
) -> None:
    encoded = [encode(op, size, masked=masked) for op, size in frames]
    stream = b"".join(encoded)
    ends = set()
    offset = 0
    for frame in encoded:
        offset += len(frame)
        ends.add(offset)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    tracker = FrameTracker()
    for start, stop in itertools.pairwise(points):
        chunk = stream[start:stop]
        # Before reading a chunk: where does the frame under way end inside it?
        end = tracker.frame_end(chunk)
        following = [e - start for e in sorted(ends) if start < e <= stop]
        if tracker.at_boundary:
            assert end == 0
        elif following:
            assert end == following[0]
        else:
            assert end == -1
        tracker.advance(chunk)
        assert tracker.at_boundary == (stop in ends)
    assert tracker.at_boundary
    assert not tracker.saw_close


def test_a_close_frame_split_in_its_header_is_seen() -> None:
    frame = Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=True, extensions=[])
    tracker = FrameTracker()
    tracker.advance(frame[:1])
    assert not tracker.at_boundary
    tracker.advance(frame[1:])
    assert tracker.saw_close
    assert tracker.at_boundary


def test_close_frames_of_the_proxy_parse_as_what_they_say() -> None:
    """Both the unmasked frame (to a client) and the masked one (to a server, RFC 6455 §5.3)
    decode, with websockets' parser, to close code 1001 and the reason."""
    for masked in (False, True):
        raw = close_frame(1001, b"TrayProxy is stopping", masked=masked)
        assert bool(raw[1] & 0x80) == masked
        length = raw[1] & 0x7F
        payload = raw[2 + (4 if masked else 0) :]
        assert len(payload) == length
        if masked:
            mask = raw[2:6]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        close = Close.parse(payload)
        assert (close.code, close.reason) == (1001, "TrayProxy is stopping")


def test_masks_differ_between_close_frames() -> None:
    """A fixed mask would defeat its purpose (RFC 6455 §10.3)."""
    masks = {close_frame(1001, b"x", masked=True)[2:6] for _ in range(8)}
    assert len(masks) > 1


def test_reason_longer_than_a_control_frame_allows_is_cut() -> None:
    raw = close_frame(1011, os.urandom(200), masked=False)
    assert raw[1] == 125  # 2 bytes of code + 123 of reason
