"""The relay's frame tracker: it must know where every message ends however the bytes are
split, or a close frame of the proxy's would land inside a message and corrupt or cut it.

Frames are built with the ``websockets`` library's own framing (not ours), masked and
unmasked, with the 7-bit, 16-bit and 64-bit length forms, messages whole and fragmented with
pings in between, and cut into reads at random points.
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
# One message: its data frames' sizes (more than one: fragmented), and after which fragment a
# ping or pong comes in between (RFC 6455 §5.4 lets control frames interleave).
MESSAGES = st.tuples(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    st.lists(SIZES, min_size=1, max_size=3),
    st.none() | st.integers(min_value=0, max_value=2),
)


def encode(opcode: Opcode, size: int, *, fin: bool, masked: bool) -> bytes:
    data = b"x" * size
    if opcode in (Opcode.PING, Opcode.PONG):
        data = data[:125]
    return Frame(opcode, data, fin=fin).serialize(mask=masked, extensions=[])


def stream_of(messages: list[tuple[Opcode, list[int], int | None]], masked: bool) -> tuple[bytes, set[int], set[int]]:
    """The bytes of ``messages``, where each frame ends, and where nothing of a message is
    under way (after a whole message, or after a control frame between messages)."""
    frames: list[tuple[bytes, bool]] = []  # (frame, a message under way after it)
    for opcode, sizes, control_after in messages:
        for index, size in enumerate(sizes):
            last = index == len(sizes) - 1
            frames.append((encode(opcode if index == 0 else Opcode.CONT, size, fin=last, masked=masked), not last))
            if control_after == index:
                frames.append((encode(Opcode.PING, 10, fin=True, masked=masked), not last))
    stream, frame_ends, message_ends, offset = b"", set(), set(), 0
    for frame, under_way in frames:
        stream += frame
        offset += len(frame)
        frame_ends.add(offset)
        if not under_way:
            message_ends.add(offset)
    return stream, frame_ends, message_ends


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(MESSAGES, min_size=1, max_size=4),
    masked=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=8),
)
def test_messages_are_followed_however_the_stream_is_cut(
    messages: list[tuple[Opcode, list[int], int | None]], masked: bool, cuts: list[int]
) -> None:
    """Cut into reads anywhere, the tracker knows before each read where in it the message
    under way ends (a close frame of the proxy's may go there and nowhere earlier), and after
    each read whether one is under way."""
    stream, _, message_ends = stream_of(messages, masked)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    tracker = FrameTracker()
    for start, stop in itertools.pairwise(points):
        chunk = stream[start:stop]
        end = tracker.message_end(chunk)
        following = [e - start for e in sorted(message_ends) if start < e <= stop]
        if tracker.between_messages:
            assert end == 0
        elif following:
            assert end == following[0]
        else:
            assert end == -1
        tracker.advance(chunk)
        assert tracker.between_messages == (stop in message_ends)
    assert tracker.between_messages
    assert not tracker.saw_close


def test_a_close_frame_split_in_its_header_is_seen() -> None:
    frame = Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=True, extensions=[])
    tracker = FrameTracker()
    tracker.advance(frame[:1])
    assert not tracker.between_messages
    tracker.advance(frame[1:])
    assert tracker.saw_close
    assert tracker.between_messages


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
