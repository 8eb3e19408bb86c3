"""A watched WebSocket, as the inspector's row shows it: messages and bytes each way, how long
it lasted, the close code and who closed (issue 15).

The proxy is a real ProxyService given a capture tap that records what the engine tells it;
clients are the ``websockets`` library and raw sockets (frames split where a test wants), the
target a real aiohttp WebSocket server. Every test runs on both ways a WebSocket is carried: the
byte relay (aiohttp 3.14) and the message bridge (any other aiohttp).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from websockets.frames import Close, Frame, Opcode
from wsclients import read_frame, ws_client

from desktop.config.model import ProxySettings, Routing, Target
from desktop.engine import websocket
from desktop.engine.capture import ExchangeEnd, RequestHead, WebSocketTally
from desktop.engine.service import ProxyService
from desktop.engine.wstally import DirectionWatch, MessageCounter
from desktop.routing import RouteTable, TargetClaims

MIB = 1024 * 1024
# Deadlock guard on every wait: a hang fails the test instead of stalling the run.
WAIT_S = 10.0

BOTH_WAYS = pytest.mark.parametrize(
    "ws_path", ["relay", "bridge"] if websocket.RAW_RELAY else ["bridge"], indirect=True
)


# --- a tap that records what it is told ----------------------------------------------------------


@dataclass
class Watched:
    head: RequestHead
    messages: list[tuple[bool, int, float]] = field(default_factory=list)
    chunks: int = 0
    ending: ExchangeEnd | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def request_body(self, body: bytes) -> None:
        pass

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        pass

    def chunk(self, data: bytes, at: float) -> None:
        self.chunks += 1

    def message(self, to_target: bool, size: int, at: float) -> None:
        assert self.ending is None, "a message told after the end"
        self.messages.append((to_target, size, at))

    def end(self, end: ExchangeEnd) -> None:
        self.ending = end
        self.ended.set()

    def sizes(self, *, to_target: bool) -> list[int]:
        return [size for up, size, _ in self.messages if up is to_target]

    async def tally(self) -> WebSocketTally:
        """The tally the end carried, once the request is over."""
        async with asyncio.timeout(WAIT_S):
            await self.ended.wait()
        assert self.ending is not None
        assert self.ending.websocket is not None
        return self.ending.websocket


class RecordingTap:
    def __init__(self) -> None:
        self.watched: list[Watched] = []

    def begin(self, head: RequestHead) -> Watched:
        watched = Watched(head)
        self.watched.append(watched)
        return watched

    @property
    def only(self) -> Watched:
        assert len(self.watched) == 1, self.watched
        return self.watched[0]


# --- the target and the proxy --------------------------------------------------------------------


def target_app() -> web.Application:
    """``/ws`` echoes text and binary as they came; ``close:CODE`` makes it close with CODE,
    ``drop`` makes it drop its connection without a close frame, ``greet:N`` makes it send N
    one-byte messages. ``/refuse`` answers 403."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
                await ws.close(code=int(msg.data.split(":")[1]), message=b"target says bye")
                break
            if msg.type is WSMsgType.TEXT and msg.data == "drop":
                assert request.transport is not None
                request.transport.abort()
                break
            if msg.type is WSMsgType.TEXT and msg.data.startswith("greet:"):
                for _ in range(int(msg.data.split(":")[1])):
                    await ws.send_bytes(b"g")
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no")

    app = web.Application()
    app.router.add_get("/ws", handler)
    app.router.add_get("/refuse", refuse)
    return app


SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=2.0)
Serve = Callable[..., Awaitable[tuple[ProxyService, RecordingTap]]]


@pytest.fixture
async def serve(aiohttp_server) -> AsyncIterator[Serve]:
    services: list[ProxyService] = []

    async def start(*, routing_to: str | None = None) -> tuple[ProxyService, RecordingTap]:
        server = await aiohttp_server(target_app())
        main = Target(url=str(server.make_url("")), name="main")
        routing = None
        if routing_to is not None:
            # /other goes to a target on a dead port first, then falls back to main.
            dead = socket.socket()
            dead.bind(("127.0.0.1", 0))
            dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
            dead.close()
            other = Target(url=dead_url, name="other", connect_timeout_s=2.0)
            table = RouteTable.build(
                [TargetClaims("main"), TargetClaims("other", prefixes=("/other",), fallbacks=("main",))],
                default="main",
            )
            routing = Routing(table, (other,))
        tap = RecordingTap()
        service = ProxyService(SETTINGS, main, routing=routing, tap=tap)
        await service.start()
        services.append(service)
        return service, tap

    yield start
    for service in services:
        await service.stop(grace_s=0.5)


def ws_url(service: ProxyService, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{service.port}{path}"


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client on a raw socket (Nagle off, so each write leaves as its own segment) that has
    done the handshake; aborted (no close frame) on the way out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(WAIT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        yield reader, writer
    finally:
        writer.transport.abort()


def client_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


async def trickle(writer: asyncio.StreamWriter, data: bytes, piece: int) -> None:
    """Write ``data`` ``piece`` bytes at a time, letting the proxy read between pieces."""
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
        await writer.drain()
        await asyncio.sleep(0.002)


# --- tests ------------------------------------------------------------------------------------


@BOTH_WAYS
async def test_each_whole_message_is_counted_with_its_bytes_each_way(serve: Serve, ws_path: str) -> None:
    """Text (UTF-8 counted in bytes), binary, an empty message, one of 1 MiB (many reads on
    its way) and one sent in three fragments each count once with their payload bytes, up and
    back; pings are not messages. The client's close code 4000 is the one shown, as the client's."""
    service, tap = await serve()
    sent: list[str | bytes] = ["hello", "é 🙂 日本", b"\x00\x01\xff" * 100, "", os.urandom(MIB)]
    expected = [5, len("é 🙂 日本".encode()), 300, 0, MIB, 6]
    async with ws_client(ws_url(service), compression=None, max_size=None) as ws:
        for message in sent:
            await ws.send(message)
            async with asyncio.timeout(WAIT_S):
                assert await ws.recv() == message
        await ws.send(iter(["ab", "cd", "ef"]))  # one message in three frames
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "abcdef"
            await (await ws.ping(b"not a message"))
        await ws.close(code=4000, reason="done")
    watched = tap.only
    tally = await watched.tally()
    assert watched.sizes(to_target=True) == expected
    assert watched.sizes(to_target=False) == expected
    assert tally == WebSocketTally(
        messages_up=6,
        messages_down=6,
        bytes_up=sum(expected),
        bytes_down=sum(expected),
        close_code=4000,
        closed_by="client",
    )
    assert watched.chunks == 0
    assert watched.ending is not None
    assert watched.ending.status == 101
    # Each message's time lies within the WebSocket's life, in the order they passed.
    times = [at for _, _, at in watched.messages]
    assert times == sorted(times)
    assert watched.head.started <= times[0]
    assert times[-1] <= watched.ending.ended
    assert watched.head.websocket


@BOTH_WAYS
async def test_the_target_closing_is_shown_with_its_code(serve: Serve, ws_path: str) -> None:
    """A target that ends the session with 4001 is shown as having closed it, with 4001;
    the 40 messages it sent before count as down."""
    service, tap = await serve()
    async with ws_client(ws_url(service), compression=None) as ws:
        await ws.send("greet:40")
        async with asyncio.timeout(WAIT_S):
            for _ in range(40):
                assert await ws.recv() == b"g"
        await ws.send("close:4001")
        async with asyncio.timeout(WAIT_S):
            await ws.wait_closed()
        assert ws.close_code == 4001
    tally = await tap.only.tally()
    assert (tally.close_code, tally.closed_by) == (4001, "target")
    assert (tally.messages_up, tally.bytes_up) == (2, len("greet:40") + len("close:4001"))
    assert (tally.messages_down, tally.bytes_down) == (40, 40)


@BOTH_WAYS
async def test_a_client_that_drops_closed_it_without_a_code(serve: Serve, ws_path: str) -> None:
    """A tool killed mid-session (no close frame) is shown as the side that closed, with
    1006 (closed abnormally, RFC 6455 §7.4.1), not as the proxy's 1011 to the target."""
    service, tap = await serve()
    async with raw_client(service.port) as (reader, writer):
        writer.write(client_frame(Opcode.TEXT, b"hi"))
        async with asyncio.timeout(WAIT_S):
            assert await read_frame(reader) == (Opcode.TEXT, b"hi")
    tally = await tap.only.tally()
    assert (tally.close_code, tally.closed_by) == (1006, "client")
    assert (tally.messages_up, tally.messages_down) == (1, 1)


@BOTH_WAYS
async def test_a_target_that_drops_closed_it_without_a_code(serve: Serve, ws_path: str) -> None:
    """The mirror: the target's connection lost without a close frame shows as the target's
    1006 (the client is told 1011 by the proxy, as before)."""
    service, tap = await serve()
    async with ws_client(ws_url(service), compression=None) as ws:
        await ws.send("drop")
        async with asyncio.timeout(WAIT_S):
            await ws.wait_closed()
        assert ws.close_code == 1011
    tally = await tap.only.tally()
    assert (tally.close_code, tally.closed_by) == (1006, "target")


@BOTH_WAYS
async def test_a_stopping_proxy_is_shown_as_the_closer_with_1001(serve: Serve, ws_path: str) -> None:
    service, tap = await serve()
    async with ws_client(ws_url(service), compression=None) as ws:
        await ws.send("one")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "one"
            await service.stop(grace_s=1.0)
            await ws.wait_closed()
        assert ws.close_code == 1001
    tally = await tap.only.tally()
    assert (tally.close_code, tally.closed_by) == (1001, "proxy")
    assert (tally.messages_up, tally.messages_down) == (1, 1)


@BOTH_WAYS
async def test_frames_cut_anywhere_count_the_same(serve: Serve, ws_path: str) -> None:
    """A client whose frames reach the proxy a few bytes at a time (a slow link): a message
    in two fragments with a ping between them, a 70,000-byte frame (64-bit length) and a close
    frame whose code arrives in two reads still count as two messages and close code 4002."""
    service, tap = await serve()
    big = os.urandom(70_000)
    stream = (
        client_frame(Opcode.TEXT, b"frag", fin=False)
        + client_frame(Opcode.PING, b"between")
        + client_frame(Opcode.CONT, b"ment")
        + client_frame(Opcode.BINARY, big)
    )
    async with raw_client(service.port) as (reader, writer):
        await trickle(writer, stream[:300], 3)
        writer.write(stream[300:])
        async with asyncio.timeout(WAIT_S):
            frames = [await read_frame(reader) for _ in range(3)]
        # The target's pong to the ping comes first.
        assert frames == [(Opcode.PONG, b"between"), (Opcode.TEXT, b"fragment"), (Opcode.BINARY, big)]
        await trickle(writer, client_frame(Opcode.CLOSE, Close(4002, "bye").serialize()), 1)
        async with asyncio.timeout(WAIT_S):
            assert (await read_frame(reader))[0] == Opcode.CLOSE  # the answer to it
    watched = tap.only
    tally = await watched.tally()
    assert watched.sizes(to_target=True) == [8, 70_000]
    assert (tally.close_code, tally.closed_by) == (4002, "client")


@BOTH_WAYS
async def test_a_refused_upgrade_has_no_websocket_counts(serve: Serve, ws_path: str) -> None:
    """No 101, nothing carried: the row is the refusal's, without WebSocket counts."""
    service, tap = await serve()
    with pytest.raises(Exception, match="403"):
        async with ws_client(ws_url(service, "/refuse")):
            pass
    watched = tap.only
    async with asyncio.timeout(WAIT_S):
        await watched.ended.wait()
    assert watched.ending is not None
    assert watched.ending.status == 403
    assert watched.ending.websocket is None
    assert watched.messages == []


@BOTH_WAYS
async def test_a_websocket_that_failed_over_is_counted_on_the_target_that_carried_it(
    serve: Serve, ws_path: str
) -> None:
    """With routes: the first target cannot be reached, the fallback carries the WebSocket;
    its messages and close are counted once, on the row that names both attempts."""
    service, tap = await serve(routing_to="other")
    async with ws_client(ws_url(service, "/other/ws"), compression=None) as ws:
        await ws.send("routed")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "routed"
        await ws.close(code=1000)
    watched = tap.only
    tally = await watched.tally()
    assert watched.ending is not None
    assert watched.ending.target == "main"
    assert len(watched.ending.attempts) == 2
    assert tally == WebSocketTally(1, 1, 6, 6, 1000, "client")


# It allocates enough to set off the garbage collector, which may then finalise a socket an
# earlier test left unclosed (seen with the lowest versions' test plugins): not this test's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_relay_counter_reads_any_cut_the_same() -> None:
    """The relay's counter (wstally.MessageCounter) fed a direction's bytes cut at every
    point, and byte by byte, finds the same messages and close code as fed whole."""
    frames = (
        client_frame(Opcode.TEXT, b"hello")
        + client_frame(Opcode.BINARY, b"x" * 300, fin=False)  # 16-bit length
        + client_frame(Opcode.PING, b"p")
        + client_frame(Opcode.CONT, b"y" * 70_000)  # 64-bit length
        + client_frame(Opcode.TEXT, b"")
        + client_frame(Opcode.CLOSE, Close(4003, "why").serialize())
    )

    def counted(pieces: list[bytes]) -> tuple[list[int], WebSocketTally]:
        seen: list[int] = []

        class Sink:
            def message(self, to_target: bool, size: int, at: float) -> None:
                seen.append(size)

        tally = WebSocketTally()
        counter = MessageCounter(DirectionWatch(Sink(), tally, to_target=True))  # type: ignore[arg-type]
        for piece in pieces:
            counter.feed(piece)
        return seen, tally

    async def run() -> None:
        whole = counted([frames])
        assert whole[0] == [5, 70_300, 0]
        assert (whole[1].close_code, whole[1].closed_by, whole[1].bytes_up) == (4003, "client", 70_305)
        for cut in range(1, len(frames)):
            assert counted([frames[:cut], frames[cut:]]) == whole, cut
        assert counted([frames[i : i + 1] for i in range(len(frames))]) == whole

    asyncio.run(run())
