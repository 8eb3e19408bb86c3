"""Counting a carried WebSocket for the capture: whole messages each way and the first close.

Only a watched WebSocket is counted (a capture was given); an unwatched one costs nothing here.
The byte relay (wsrelay.py) feeds a ``MessageCounter`` per direction with the bytes it relayed:
it follows the frame headers as the relay's FrameTracker does, adding up each data message's
payload lengths, and reads a close frame's code from its first two payload bytes (unmasked).
The message bridge (websocket.py) tells a ``DirectionWatch`` of each message it copied.

A message's size is its payload as it crossed the proxy: the relay sees frames, so a message the
peers compressed (permessage-deflate) counts its compressed bytes; the bridge sees messages, so
it counts them inflated (text as UTF-8).

Who closed is the side whose close frame came first (RFC 6455 §7.4): "client", "target", or
"proxy" when the proxy said it first (1001 when it stops). A side whose connection dropped
without a close frame closed it, with 1006; a close frame without a code reads as 1005 (both
codes RFC 6455 §7.4.1 reserves for telling exactly this, never sent).
"""

from __future__ import annotations

import asyncio

from desktop.engine.capture import ExchangeCapture, WebSocketTally

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_NO_STATUS",
    "DirectionWatch",
    "MessageCounter",
    "first_close",
    "frame_extent",
    "text_size",
]

CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
OPCODE_CLOSE = 0x8


def first_close(tally: WebSocketTally, by: str, code: int) -> None:
    """Note that ``by`` closed with ``code``, unless a close came before."""
    if not tally.closed_by:
        tally.closed_by = by
        tally.close_code = code


def text_size(text: str) -> int:
    """A text message's size in UTF-8, without encoding an ASCII one."""
    return len(text) if text.isascii() else len(text.encode())


def frame_extent(data: bytes, start: int) -> tuple[int, int]:
    """(offset just past the frame header at ``start``, payload length), or (-1, 0) when
    the header is not all in ``data`` yet."""
    end = len(data)
    pos = start + 2
    if pos > end:
        return -1, 0
    length = data[start + 1] & 0x7F
    if length == 126:
        if pos + 2 > end:
            return -1, 0
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
    elif length == 127:
        if pos + 8 > end:
            return -1, 0
        length = int.from_bytes(data[pos : pos + 8], "big")
        pos += 8
    if data[start + 1] & 0x80:
        pos += 4
    if pos > end:
        return -1, 0
    return pos, length


class DirectionWatch:
    """One direction of a watched WebSocket: its messages go to the tally and the capture."""

    __slots__ = ("capture", "loop", "source", "tally", "to_target")

    def __init__(self, capture: ExchangeCapture, tally: WebSocketTally, *, to_target: bool) -> None:
        self.capture = capture
        self.tally = tally
        self.to_target = to_target
        self.source = "client" if to_target else "target"
        self.loop = asyncio.get_running_loop()

    def message(self, size: int) -> None:
        """A whole message of ``size`` payload bytes went on its way."""
        tally = self.tally
        if self.to_target:
            tally.messages_up += 1
            tally.bytes_up += size
        else:
            tally.messages_down += 1
            tally.bytes_down += size
        self.capture.message(self.to_target, size, self.loop.time())

    def closed(self, code: int) -> None:
        """The source sent a close frame with ``code`` (or dropped: CLOSE_ABNORMAL)."""
        first_close(self.tally, self.source, code)


class MessageCounter:
    """Whole messages in one direction's byte stream, from frame headers and close codes alone
    (payloads are skipped, never copied)."""

    __slots__ = ("close_code", "close_mask", "ends_message", "partial", "remaining", "size", "watch")

    def __init__(self, watch: DirectionWatch) -> None:
        self.watch = watch
        # Payload bytes of the current frame not seen yet.
        self.remaining = 0
        # The start of a frame header split across reads.
        self.partial = b""
        # Payload bytes of the data message under way so far.
        self.size = 0
        # The current frame is its message's last (FIN set): the message ends with its payload.
        self.ends_message = False
        # Reading a close frame's code: the bytes of it seen so far (None: not reading one),
        # and the frame's mask key (b"" when unmasked).
        self.close_code: bytes | None = None
        self.close_mask = b""

    def feed(self, data: bytes) -> None:
        """Follow the frames through ``data``, the next bytes relayed this way."""
        end = len(data)
        pos = 0
        if self.partial:
            data = self.partial + data
            self.partial = b""
            end = len(data)
        elif self.remaining:
            pos = min(self.remaining, end)
            if self.close_code is not None:
                self._close_bytes(data, 0, pos)
            self.remaining -= pos
            if self.remaining:
                return  # inside a large frame: the common case
            self._frame_done()
        while pos < end:
            header_end, length = frame_extent(data, pos)
            if header_end < 0:
                self.partial = bytes(data[pos:])
                return
            first = data[pos]
            opcode = first & 0x0F
            if opcode < OPCODE_CLOSE:
                self.size += length
                self.ends_message = bool(first & 0x80)
            else:  # a control frame (possibly between two fragments) ends no message
                self.ends_message = False
                if opcode == OPCODE_CLOSE:
                    self._close_frame(data, pos, header_end, length)
            stop = header_end + length
            if stop > end:
                if self.close_code is not None:
                    self._close_bytes(data, header_end, end)
                self.remaining = stop - end
                return
            if self.close_code is not None:
                self._close_bytes(data, header_end, stop)
            self._frame_done()
            pos = stop

    def _frame_done(self) -> None:
        if self.ends_message:
            self.ends_message = False
            size, self.size = self.size, 0
            self.watch.message(size)

    def _close_frame(self, data: bytes, pos: int, header_end: int, length: int) -> None:
        if self.watch.tally.closed_by:
            return  # not the first close: its code does not matter
        if length < 2:
            self.watch.closed(CLOSE_NO_STATUS)
            return
        self.close_code = b""
        self.close_mask = bytes(data[header_end - 4 : header_end]) if data[pos + 1] & 0x80 else b""

    def _close_bytes(self, data: bytes, start: int, stop: int) -> None:
        assert self.close_code is not None
        got = self.close_code + bytes(data[start : min(stop, start + 2 - len(self.close_code))])
        if len(got) < 2:
            self.close_code = got
            return
        self.close_code = None
        mask = self.close_mask
        if mask:
            got = bytes((got[0] ^ mask[0], got[1] ^ mask[1]))
        self.watch.closed(int.from_bytes(got, "big"))
