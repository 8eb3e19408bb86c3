"""Relay an upgraded WebSocket connection byte for byte, as nginx and Caddy do.

After the handshake the proxy has nothing to change in what the two peers say, so it does not
parse their messages: each chunk read from one connection is written to the other from
aiohttp's protocol callback (no task, no message object, no unmask/re-mask, no inflate/deflate;
compression and subprotocol are whatever the two peers agreed on end to end). A slow reader
pauses the other side's socket until its buffer drains, so memory stays bounded.

The one thing the proxy still says itself is a close frame: 1001 "going away" when it stops,
1011 when one side's connection drops without a close frame. Putting a frame into a byte stream
needs a place between two messages, so a tracker follows the frame headers (2 to 14 bytes each,
a few operations per chunk: lengths, FIN bits, opcodes) without touching payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from desktop.engine.capture import ExchangeCapture, WebSocketTally
from desktop.engine.wstally import CLOSE_ABNORMAL, DirectionWatch, MessageCounter, first_close, frame_extent

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_PEER_LOST",
    "CLOSE_TIMEOUT_S",
    "GOING_AWAY_REASON",
    "PEER_LOST_REASON",
    "FrameTracker",
    "WebSocketRelay",
    "close_frame",
]

# A peer that does not answer our close frame within this long is cut.
CLOSE_TIMEOUT_S = 5.0
# The close frames the proxy says itself (RFC 6455 §7.4.1), here and in the message bridge:
# 1001 "going away" when it stops, 1011 when one side was lost without a close frame.
CLOSE_GOING_AWAY = 1001
GOING_AWAY_REASON = b"TrayProxy is stopping"
CLOSE_PEER_LOST = 1011
PEER_LOST_REASON = b"TrayProxy: peer connection lost"
OPCODE_CLOSE = 0x8


class _Transport(Protocol):
    def write(self, data: Any) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...


def close_frame(code: int, reason: bytes, *, masked: bool) -> bytes:
    """A complete close frame; ``masked`` for frames sent to a server (RFC 6455 §5.3)."""
    payload = code.to_bytes(2, "big") + reason[:123]
    if not masked:
        return bytes((0x80 | OPCODE_CLOSE, len(payload))) + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | OPCODE_CLOSE, 0x80 | len(payload))) + mask + body


class FrameTracker:
    """Where the frames and messages of one direction begin and end, from frame headers alone."""

    __slots__ = ("in_message", "partial", "remaining", "saw_close")

    def __init__(self) -> None:
        # Payload bytes of the current frame not seen yet.
        self.remaining = 0
        # The start of a frame header split across reads.
        self.partial = b""
        # A fragmented message is under way: its first data frame (FIN clear) has passed and
        # its final fragment has not. Control frames may come in between (RFC 6455 §5.4).
        self.in_message = False
        self.saw_close = False

    @property
    def between_messages(self) -> bool:
        """Nothing of a message is under way: a frame of the proxy's own may go in here."""
        return self.remaining == 0 and not self.partial and not self.in_message

    def advance(self, data: bytes) -> None:
        """Follow the frames through ``data``, the next bytes of this direction."""
        remaining = self.remaining
        if remaining >= len(data) and not self.partial:
            self.remaining = remaining - len(data)  # the common case inside a large frame
            return
        if self.partial:
            data = self.partial + data
            self.partial = b""
        end = len(data)
        pos = remaining
        while pos < end:
            header_end, length = frame_extent(data, pos)
            if header_end < 0:
                self.partial = bytes(data[pos:])
                self.remaining = 0
                return
            first = data[pos]
            opcode = first & 0x0F
            if opcode < OPCODE_CLOSE:  # a data frame: FIN says whether its message ends
                self.in_message = not first & 0x80
            elif opcode == OPCODE_CLOSE:
                self.saw_close = True
            pos = header_end + length
        self.remaining = pos - end

    def message_end(self, data: bytes) -> int:
        """Offset in ``data`` where the message (or lone control frame) under way ends, 0 when
        none is, or -1 when it ends beyond ``data``. Changes nothing."""
        if self.between_messages:
            return 0
        skipped = len(self.partial)
        joined = self.partial + data if skipped else data
        end = len(joined)
        in_message = self.in_message
        pos = self.remaining
        if pos > end:
            return -1
        if pos and not in_message:
            return pos  # the single-frame message (or control frame) under way ends here
        while pos < end:
            header_end, length = frame_extent(joined, pos)
            if header_end < 0:
                return -1
            first = joined[pos]
            if first & 0x0F < OPCODE_CLOSE:
                in_message = not first & 0x80
            pos = header_end + length
            if pos > end:
                return -1
            if not in_message:
                return pos - skipped
        return -1


class _Direction:
    """aiohttp calls ``feed_data`` with each chunk read from the source connection (this object
    is set as that connection's payload parser); the chunk goes straight to the sink."""

    __slots__ = (
        "_pending_close",
        "_relay",
        "_source_paused",
        "closed_by_us",
        "count_bytes",
        "frames",
        "masked_sink",
        "sink",
        "sink_protocol",
        "source",
        "source_name",
    )

    def __init__(
        self,
        relay: WebSocketRelay,
        *,
        source: Any,
        sink: Any,
        sink_protocol: Any,
        masked_sink: bool,
        source_name: str,
    ) -> None:
        self._relay = relay
        self.source_name = source_name
        self.source: _Transport = source
        self.sink: _Transport = sink
        self.sink_protocol = sink_protocol
        self.masked_sink = masked_sink
        self.frames = FrameTracker()
        self.count_bytes = False
        # A close frame of ours waiting for the frame under way to end.
        self._pending_close: bytes | None = None
        # After our close frame, what the source still sends is not for the sink.
        self.closed_by_us = False
        # Reading the source stopped until the sink's buffer drains.
        self._source_paused = False

    # --- aiohttp's payload parser interface ---

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.closed_by_us:
            self.frames.advance(data)
            if self.frames.saw_close:
                self._relay.answered(self)
            return False, b""
        if self._pending_close is not None:
            end = self.frames.message_end(data)
            if end >= 0:
                self._write(data[:end])
                self.frames.advance(data[:end])
                self._send_close(self._pending_close)
                self.feed_data(data[end:])
                return False, b""
        self._write(data)
        self.frames.advance(data)
        if self.sink_protocol.writing_paused and not self._source_paused:
            self._pause_source()
        return False, b""

    def feed_eof(self) -> None:
        self._relay.source_ended(self)

    # --- the relay's side ---

    def _write(self, data: bytes) -> None:
        if data:
            self.sink.write(data)
            if self.count_bytes:
                self._relay.bytes_down += len(data)

    def close_toward_sink(self, code: int, reason: bytes) -> None:
        """Send the sink a close frame of ours once the message under way has passed (a
        close frame in the middle of one would lose it)."""
        if (
            self.closed_by_us
            or self._pending_close is not None
            or self.frames.saw_close  # the source's own close frame went that way already
            or self.sink.is_closing()
        ):
            return
        frame = close_frame(code, reason, masked=self.masked_sink)
        if self.frames.between_messages:
            self._send_close(frame)
        else:
            self._pending_close = frame

    def _send_close(self, frame: bytes) -> None:
        self._pending_close = None
        self.closed_by_us = True
        self.frames = FrameTracker()  # what follows is the source's next frame
        self.sink.write(frame)

    def _pause_source(self) -> None:
        # The sink's buffer is over its high-water mark: stop reading until it drains.
        self.source.pause_reading()
        self._source_paused = True

    def sink_drained(self) -> None:
        """The sink's transport called resume_writing: read the source again."""
        if self._source_paused:
            self._source_paused = False
            if not self.source.is_closing():
                self.source.resume_reading()

    def cancel(self) -> None:
        """The relay is over: a drain that comes later reads nothing more."""
        self._source_paused = False


class _CountingDirection(_Direction):
    """A watched direction: what it relays is also followed for whole messages (wstally.py).
    A class of its own, so an unwatched relay's hot path has not even a test more."""

    __slots__ = ("counter",)

    def __init__(self, relay: WebSocketRelay, *, counter: MessageCounter, **kwargs: Any) -> None:
        super().__init__(relay, **kwargs)
        self.counter = counter

    def _write(self, data: bytes) -> None:
        super()._write(data)
        if data:
            self.counter.feed(data)


class _Passthrough(asyncio.Protocol):
    """Put on a relayed connection's transport after the switch, so each read reaches its
    direction without passing through aiohttp's protocol (which only checks what no longer
    applies); writing pauses and the connection's end still go to aiohttp's protocol, which
    keeps its ``writing_paused`` and hands the end back to the direction through ``feed_eof``.
    A drained buffer also wakes the direction writing to this connection (``on_drained``)."""

    __slots__ = ("_direction", "_on_drained", "_original")

    def __init__(self, direction: _Direction, original: Any, on_drained: Callable[[], None]) -> None:
        self._direction = direction
        self._original = original
        self._on_drained = on_drained

    def data_received(self, data: bytes) -> None:
        self._direction.feed_data(data)

    def eof_received(self) -> bool | None:
        return None  # close: a WebSocket peer's half-close ends the connection anyway

    def pause_writing(self) -> None:
        self._original.pause_writing()

    def resume_writing(self) -> None:
        self._original.resume_writing()
        self._on_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self._original.connection_lost(exc)


class WebSocketRelay:
    """Both directions of one upgraded connection, and how it ends."""

    def __init__(
        self,
        *,
        client_transport: Any,
        client_protocol: Any,
        target_transport: Any,
        target_protocol: Any,
        capture: ExchangeCapture | None = None,
    ) -> None:
        """With a ``capture``, each whole message relayed is told to it and counted in
        ``tally``, with the first close (wstally.py); without, ``tally`` is None."""
        self._client_protocol = client_protocol
        self._target_protocol = target_protocol
        self.bytes_down = 0
        self.tally: WebSocketTally | None = None
        to_target: dict[str, Any] = {
            "source": client_transport,
            "sink": target_transport,
            "sink_protocol": target_protocol,
            "masked_sink": True,
            "source_name": "client",
        }
        to_client: dict[str, Any] = {
            "source": target_transport,
            "sink": client_transport,
            "sink_protocol": client_protocol,
            "masked_sink": False,
            "source_name": "target",
        }
        if capture is None:
            self.to_target = _Direction(self, **to_target)
            self.to_client = _Direction(self, **to_client)
        else:
            tally = self.tally = WebSocketTally()
            self.to_target = _CountingDirection(
                self, counter=MessageCounter(DirectionWatch(capture, tally, to_target=True)), **to_target
            )
            self.to_client = _CountingDirection(
                self, counter=MessageCounter(DirectionWatch(capture, tally, to_target=False)), **to_client
            )
        self.to_client.count_bytes = True
        # How it ended, for the access log: "closed" (a close handshake), "client dropped", ...
        self.ended = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        """Take both connections over. The target's side first: bytes it sent right behind its
        101 go out to the client at once (the client's 101 is already written)."""
        self._target_protocol.set_parser(self.to_client, None)
        self._client_protocol.set_parser(self.to_target)
        # Each connection is one direction's source and the other's sink: its drained buffer
        # lets the other direction read again.
        for direction, protocol, writer in (
            (self.to_client, self._target_protocol, self.to_target),
            (self.to_target, self._client_protocol, self.to_client),
        ):
            if not direction.source.is_closing():
                direction.source.set_protocol(_Passthrough(direction, protocol, writer.sink_drained))

    def source_ended(self, direction: _Direction) -> None:
        """One connection closed. Its peer is told 1011 if it left without a close frame (and
        a frame can be put in), then that connection is closed too, after what is queued."""
        if not self.ended:
            self.ended = "closed" if direction.frames.saw_close else f"{direction.source_name} dropped"
        if self.tally is not None and not direction.frames.saw_close:
            first_close(self.tally, direction.source_name, CLOSE_ABNORMAL)
        direction.close_toward_sink(CLOSE_PEER_LOST, PEER_LOST_REASON)
        direction.sink.close()
        self._finish()

    def answered(self, direction: _Direction) -> None:
        """The source answered our close frame with its own: that connection is done."""
        direction.source.close()

    def _finish(self) -> None:
        if self.done.done():
            return
        self.to_target.cancel()
        self.to_client.cancel()
        self.done.set_result(None)

    async def going_away(self) -> None:
        """Tell both peers 1001, give them ``CLOSE_TIMEOUT_S`` to answer, then cut."""
        self.ended = self.ended or "proxy stopping"
        self._proxy_closes()
        self.to_client.close_toward_sink(CLOSE_GOING_AWAY, GOING_AWAY_REASON)
        self.to_target.close_toward_sink(CLOSE_GOING_AWAY, GOING_AWAY_REASON)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), CLOSE_TIMEOUT_S)
        self.abort()

    def close_now(self) -> None:
        """Without waiting: 1001 to each peer where a message is not under way, then both
        connections closed once what is queued for them is written."""
        self.ended = self.ended or "proxy stopping"
        self._proxy_closes()
        for direction in (self.to_client, self.to_target):
            if direction.frames.between_messages:
                direction.close_toward_sink(CLOSE_GOING_AWAY, GOING_AWAY_REASON)
            direction.sink.close()
        self._finish()

    def _proxy_closes(self) -> None:
        if self.tally is not None:
            first_close(self.tally, "proxy", CLOSE_GOING_AWAY)

    def abort(self) -> None:
        for transport in (self.to_client.source, self.to_target.source):
            if not transport.is_closing():
                transport.abort()
        self._finish()
