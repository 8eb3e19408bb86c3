"""WebSockets at their edges: how they end, stop, and hold back, seen from both peers.

A reply streamed as a fragmented message while TrayProxy stops, a tool reconnecting while it
stops, a target closing right behind its 101, a client leaving during the upstream handshake,
either side dropping without a close frame, flow control from client to target (plain and TLS)
and both ways full at once, a frame header split across reads at stop, close frames followed at
once by the TCP close, both sides closing at once, the access line, wss through an HTTPS proxy
tunnel. (Written as a review of the byte relay; the first four showed defects, fixed since.)

Everything is real sockets on 127.0.0.1: targets are aiohttp servers or raw asyncio servers
that speak the frames themselves (built with the ``websockets`` library's framing), clients are
the ``websockets`` library, aiohttp's client or raw sockets. Tests with ``ws_path`` in their
parameters run on the relay and on the message bridge; the others run on the default way
(the relay, on the aiohttp version it was checked against).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from netservers import ConnectTunnel, LocalCA, LoopbackResolver
from upstreams import ws_echo_app
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Close, Frame, Opcode
from websockets.utils import accept_key
from wsclients import read_frame, ws_client

from desktop.engine import websocket, wsrelay
from desktop.engine.accesslog import ACCESS_LOGGER

MIB = 1024 * 1024
# Deadlock guard on every wait: a hang fails the test instead of stalling the run.
WAIT_S = 5.0
# The relay runs only where its version gate holds (see conftest.py).
BOTH_WAYS = pytest.mark.parametrize(
    "ws_path", ["relay", "bridge"] if websocket.RAW_RELAY else ["bridge"], indirect=True
)
# What the byte relay does and the message bridge (any aiohttp but 3.14) does not.
RELAY_ONLY = pytest.mark.skipif(
    not websocket.RAW_RELAY, reason="the byte relay's behaviour; this aiohttp bridges messages"
)


# --- a target that writes frames itself --------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawTarget:
    """A WebSocket target on a raw asyncio server: it answers the handshake with a correct 101
    (followed at once by ``behind_101``, in the same write), then runs ``script``. It says
    exactly the frames a test wants, split where the test wants, and nothing else."""

    def __init__(self, script: Script, *, behind_101: bytes = b"") -> None:
        self.script = script
        self.behind_101 = behind_101
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handshakes = 0

    async def start(self, *, ssl_context: Any = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.handshakes += 1
        key = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n" + self.behind_101
        )
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await self.script(reader, writer)

    async def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@asynccontextmanager
async def raw_target(
    script: Script, *, behind_101: bytes = b"", ssl_context: Any = None
) -> AsyncIterator[tuple[RawTarget, int]]:
    target = RawTarget(script, behind_101=behind_101)
    port = await target.start(ssl_context=ssl_context)
    try:
        yield target, port
    finally:
        await target.close()


def server_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    """A frame as a server sends it (unmasked)."""
    return Frame(opcode, data, fin=fin).serialize(mask=False, extensions=[])


def client_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    """A frame as a client sends it (masked, RFC 6455 §5.3)."""
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


def close_payload(code: int, reason: str = "") -> bytes:
    return Close(code, reason).serialize()


async def read_until_close(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Frames up to and including a close frame."""
    frames = []
    async with asyncio.timeout(WAIT_S):
        while True:
            frames.append(await read_frame(reader))
            if frames[-1][0] == Opcode.CLOSE:
                return frames


# --- clients -----------------------------------------------------------------------------------


def ws_url(port: int, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{port}{path}"


def handshake(port: int, path: str = "/ws") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@asynccontextmanager
async def raw_client(
    port: int, path: str = "/ws", *, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client on a raw socket that has done the handshake (101 read, nothing more)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=32 * MIB)
    try:
        writer.write(handshake(port, path))
        async with asyncio.timeout(WAIT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        yield reader, writer
    finally:
        writer.transport.abort()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` for up to WAIT_S; fail saying ``what`` did not happen."""
    for _ in range(int(WAIT_S / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"not within {WAIT_S} s: {what}")


# --- a recording aiohttp target -------------------------------------------------------------


CLOSES = web.AppKey("closes", asyncio.Queue)


def recording_app() -> web.Application:
    """``/ws`` echoes text; records how each socket ended: the close code it got, or ``None``
    when its connection dropped without a close frame. ``/quiet`` accepts and then never reads,
    so it never answers a close frame."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        request.app[CLOSES].put_nowait(ws.close_code if ws.close_code != 1006 else None)
        return ws

    async def quiet(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        await asyncio.sleep(60)
        return ws

    app = web.Application()
    app[CLOSES] = asyncio.Queue()
    app.router.add_get("/ws", echo)
    app.router.add_get("/quiet", quiet)
    return app


async def receive_until_closed(ws: ClientConnection) -> tuple[list[str | bytes], ConnectionClosed]:
    """Every message until the connection closes, and how it closed."""
    received: list[str | bytes] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                received.append(await ws.recv())
            except ConnectionClosed as closed:
                return received, closed


# === endings under stop ========================================================================


@RELAY_ONLY
async def test_stopping_lets_a_fragmented_message_under_way_finish_before_1001(start_proxy) -> None:
    """A stopping TrayProxy sends its 1001 after the message under way, also when the target
    streams it as a fragmented message (``websockets``' ``send`` of an async iterator, a
    streaming TTS or LLM reply): the client gets the whole message, then 1001, instead of
    a close between two fragments that loses it."""
    first_sent = asyncio.Event()
    finish = asyncio.Event()

    async def stream_in_two_fragments(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(server_frame(Opcode.TEXT, b"first half, ", fin=False))
        await writer.drain()
        first_sent.set()
        await finish.wait()
        writer.write(server_frame(Opcode.CONT, b"second half", fin=True))
        await writer.drain()
        await reader.read()  # whatever comes, until the proxy closes

    async with raw_target(stream_in_two_fragments) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with ws_client(ws_url(proxy.port)) as ws:
            async with asyncio.timeout(WAIT_S):
                await first_sent.wait()
            await asyncio.sleep(0.2)  # the first fragment is through the proxy
            stopping = asyncio.create_task(proxy.service.stop())
            await asyncio.sleep(0.2)
            finish.set()  # the target completes its message while the proxy is stopping
            received, closed = await receive_until_closed(ws)
            async with asyncio.timeout(WAIT_S):
                await stopping
    assert received == ["first half, second half"], "the message under way was cut by the 1001"
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001


@BOTH_WAYS
async def test_websocket_opened_while_stopping_is_refused_not_cut(
    aiohttp_server, start_proxy, monkeypatch: pytest.MonkeyPatch, ws_path: str
) -> None:
    """While ``stop`` waits for the open sockets to answer its 1001, a tool that (re)connects
    is refused (no listener, or 503 on a kept-alive connection) or told 1001 like the others;
    it was once accepted and then dropped with no close frame at all (1006) when the grace
    period ended, holding the stop up all that time.

    One socket whose two peers never answer the 1001 keeps ``stop`` waiting; the close timeout
    is set to 1 s here so the test is short (5 s in the product)."""
    monkeypatch.setattr(wsrelay, "CLOSE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT_S", 1.0)
    upstream = await aiohttp_server(recording_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with raw_client(proxy.port, "/quiet"):  # reads nothing, answers nothing
        stopping = asyncio.create_task(proxy.service.stop(grace_s=0.5))
        await asyncio.sleep(0.2)
        outcome = "refused"
        try:
            async with ws_client(ws_url(proxy.port)) as ws:
                await ws.send("hello")
                async with asyncio.timeout(WAIT_S):
                    assert await ws.recv() == "hello"
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT_S):
                        await ws.recv()
                rcvd = closed.value.rcvd
                outcome = f"closed with {rcvd.code if rcvd is not None else 'no close frame'}"
        except (InvalidHandshake, OSError):
            pass  # refused at the handshake or not listening any more: what it should be
        async with asyncio.timeout(WAIT_S):
            await stopping
    assert outcome in ("refused", "closed with 1001")


# === endings, flow control, tunnels ===========================================================


@BOTH_WAYS
async def test_target_closing_right_behind_its_101_still_delivers_its_frame_then_1011(
    start_proxy, ws_path: str
) -> None:
    """A target whose 101, first message and end of connection arrive together (it
    sent a greeting and crashed) does not leave the client on an open socket where nothing
    happens: the client gets the greeting, then 1011 saying the peer connection was lost."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with raw_target(hang_up, behind_101=server_frame(Opcode.TEXT, b"hello")) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with ws_client(ws_url(proxy.port)) as ws:
            async with asyncio.timeout(WAIT_S):
                assert await ws.recv() == "hello"
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT_S):
                    await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011


@BOTH_WAYS
async def test_client_leaving_during_the_upstream_handshake_closes_the_target_connection(
    start_proxy, ws_path: str
) -> None:
    """A tool that gives up while the target is slow to answer its upgrade does not
    leave a connection open at the target (a slot of the target's connection limit, a session
    it keeps for nobody): the target sees its connection end within moments."""
    ended = asyncio.Event()

    class SlowTarget(RawTarget):
        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            await reader.read()  # never answers; returns when the proxy closes
            ended.set()

    target = SlowTarget(lambda r, w: asyncio.sleep(0))
    port = await target.start()
    try:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(handshake(proxy.port))
        await asyncio.sleep(0.3)
        writer.close()
        async with asyncio.timeout(2.0):
            await ended.wait()
    finally:
        await target.close()


async def drop_client_mid_session(proxy_port: int) -> None:
    """A client that exchanges one message, then loses its connection without a close frame."""
    async with raw_client(proxy_port) as (reader, writer):
        writer.write(client_frame(Opcode.TEXT, b"hi"))
        async with asyncio.timeout(WAIT_S):
            assert await read_frame(reader) == (Opcode.TEXT, b"hi")
    # raw_client aborts the connection on the way out: no close frame, a reset


async def test_client_dropping_without_close_frame_tells_target_1011(
    aiohttp_server, start_proxy
) -> None:
    """The mirror of the existing target-drop test: a tool whose connection
    drops mid-session (killed, laptop lid) leaves the target a 1011 close frame, so the target
    knows the session was lost rather than ended."""
    upstream = await aiohttp_server(recording_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    await drop_client_mid_session(proxy.port)
    async with asyncio.timeout(WAIT_S):
        assert await upstream.app[CLOSES].get() == 1011


@pytest.mark.parametrize("ws_path", ["bridge"], indirect=True)
async def test_bridge_tells_target_1011_when_the_client_drops(
    aiohttp_server, start_proxy, ws_path: str
) -> None:
    """The message bridge (what users of any other aiohttp version get) tells the target 1011
    when a tool's connection drops mid-session, as the relay does; it used to say 1000, a
    normal close, as if the user had ended the session."""
    upstream = await aiohttp_server(recording_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    await drop_client_mid_session(proxy.port)
    async with asyncio.timeout(WAIT_S):
        assert await upstream.app[CLOSES].get() == 1011


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_slow_target_holds_the_client_back_instead_of_filling_memory(
    start_proxy, tmp_path: Path, tls: bool
) -> None:
    """The direction the existing flow-control test does not cover: while the target
    reads nothing, a client sending 64 MiB keeps most of it in its own buffer (the proxy stops
    reading it), for a plain and a TLS target; once the target reads, every byte arrives."""
    start_reading = asyncio.Event()
    got = [0]

    async def read_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await start_reading.wait()
        while chunk := await reader.read(MIB):
            got[0] += len(chunk)

    local_ca = LocalCA.issue(tmp_path, "localhost") if tls else None
    async with raw_target(read_late, ssl_context=local_ca.server_context() if local_ca else None) as (
        _,
        port,
    ):
        if local_ca is not None:
            proxy = await start_proxy(
                f"https://localhost:{port}", resolver=LoopbackResolver(), ca_bundle=str(local_ca.ca_path)
            )
        else:
            proxy = await start_proxy(f"http://127.0.0.1:{port}")
        frame = client_frame(Opcode.BINARY, bytes(MIB))
        async with raw_client(proxy.port) as (_, writer):
            for _ in range(64):
                writer.write(frame)
            await asyncio.sleep(1.0)
            assert writer.transport.get_write_buffer_size() > 32 * MIB, "the proxy took it all in"
            assert got[0] == 0
            start_reading.set()
            await wait_until(lambda: got[0] == 64 * len(frame), "all bytes at the target")


async def test_both_directions_full_at_once_drain_without_deadlock(start_proxy) -> None:
    """A client and a target that both send 32 MiB before reading anything (both
    directions paused at once) get every byte once they read: the proxy's pauses release
    each other instead of waiting on each other."""
    start_reading = asyncio.Event()
    to_target = 32 * len(client_frame(Opcode.BINARY, bytes(MIB)))
    to_client = 32 * len(server_frame(Opcode.BINARY, bytes(MIB)))
    got = {"target": 0, "client": 0}

    async def send_then_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(32):
            writer.write(server_frame(Opcode.BINARY, bytes(MIB)))
        await start_reading.wait()
        while got["target"] < to_target and (chunk := await reader.read(MIB)):
            got["target"] += len(chunk)
        await reader.read()

    async with raw_target(send_then_read) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with raw_client(proxy.port) as (reader, writer):
            for _ in range(32):
                writer.write(client_frame(Opcode.BINARY, bytes(MIB)))
            await asyncio.sleep(0.5)
            start_reading.set()
            async with asyncio.timeout(WAIT_S * 2):
                while got["client"] < to_client:
                    chunk = await reader.read(MIB)
                    assert chunk, "the proxy closed the client"
                    got["client"] += len(chunk)
            await wait_until(lambda: got["target"] == to_target, "all bytes at the target")


@RELAY_ONLY
async def test_stopping_with_a_frame_header_split_across_reads_puts_1001_after_that_frame(
    start_proxy,
) -> None:
    """When the proxy stops just after the first two bytes of a frame's header came in
    (a 16-bit length whose second byte is still on its way), its 1001 waits for that frame: the
    client gets the whole 300-byte message intact, then 1001, not a close frame inside a header
    (which the client would read as garbage)."""
    header_started = asyncio.Event()
    rest = asyncio.Event()
    payload = bytes(range(256)) + bytes(44)
    frame = server_frame(Opcode.BINARY, payload)
    assert frame[1] == 126  # 16-bit length form: 2 + 2 header bytes

    async def split_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame[:3])  # opcode byte, 126, first byte of the length
        await writer.drain()
        header_started.set()
        await rest.wait()
        writer.write(frame[3:])
        await writer.drain()
        await reader.read()

    async with raw_target(split_header) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with raw_client(proxy.port) as (reader, writer):
            async with asyncio.timeout(WAIT_S):
                await header_started.wait()
            await asyncio.sleep(0.2)
            stopping = asyncio.create_task(proxy.service.stop())
            await asyncio.sleep(0.2)
            rest.set()
            frames = await read_until_close(reader)
            writer.write(client_frame(Opcode.CLOSE, frames[-1][1]))
            async with asyncio.timeout(WAIT_S):
                await stopping
    assert frames[0] == (Opcode.BINARY, payload)
    assert frames[1][0] == Opcode.CLOSE
    assert int.from_bytes(frames[1][1][:2], "big") == 1001
    assert len(frames) == 2


@BOTH_WAYS
async def test_target_close_frame_followed_at_once_by_its_tcp_close_reaches_the_client(
    start_proxy, ws_path: str
) -> None:
    """A target that sends its close frame (4002 "done") and hangs up in the same
    breath: the client gets 4002 "done", not a 1011 of the proxy's and not a bare drop (the
    close frame is flushed before the proxy closes the client's connection)."""

    async def close_and_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(server_frame(Opcode.CLOSE, close_payload(4002, "done")))
        writer.close()

    async with raw_target(close_and_hang_up) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with ws_client(ws_url(proxy.port)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT_S):
                    await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "done")


@BOTH_WAYS
async def test_client_close_frame_followed_at_once_by_its_tcp_close_reaches_the_target(
    aiohttp_server, start_proxy, ws_path: str
) -> None:
    """A client that sends its close frame (4001) and hangs up at once (a browser tab
    closing): the target learns 4001, the client's own code, not the proxy's 1011."""
    upstream = await aiohttp_server(recording_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with raw_client(proxy.port) as (reader, writer):
        writer.write(client_frame(Opcode.TEXT, b"hi"))
        async with asyncio.timeout(WAIT_S):
            assert await read_frame(reader) == (Opcode.TEXT, b"hi")
        writer.write(client_frame(Opcode.CLOSE, close_payload(4001, "bye")))
        writer.close()
    async with asyncio.timeout(WAIT_S):
        assert await upstream.app[CLOSES].get() == 4001


@RELAY_ONLY
async def test_both_sides_closing_at_once_each_get_the_others_close_frame(start_proxy) -> None:
    """Client and target send their close frames at the same moment: each gets the
    other's (4001 at the target, 4002 at the client), and both connections end."""
    go = asyncio.Event()
    target_got: list[tuple[int, bytes]] = []

    async def close_at_cue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        writer.write(server_frame(Opcode.CLOSE, close_payload(4002, "target")))
        target_got.extend(await read_until_close(reader))
        writer.close()

    async with raw_target(close_at_cue) as (_, port):
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with raw_client(proxy.port) as (reader, writer):
            go.set()
            writer.write(client_frame(Opcode.CLOSE, close_payload(4001, "client")))
            frames = await read_until_close(reader)
            async with asyncio.timeout(WAIT_S):
                assert await reader.read() == b"", "the proxy kept the client connection open"
    assert frames == [(Opcode.CLOSE, close_payload(4002, "target"))]
    assert target_got == [(Opcode.CLOSE, close_payload(4001, "client"))]


@RELAY_ONLY
async def test_access_line_of_a_relayed_websocket_has_101_and_the_bytes_sent_down(
    aiohttp_server, start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The access line of a relayed WebSocket shows 101, the bytes the client got (the
    1004-byte echo frame and the target's 4-byte close answer), the target's name, how it
    ended, and
    no error line is logged by aiohttp after the handler hands back its 101 response."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url(proxy.port), compress=0, autoping=False)
            await ws.send_str("x" * 1000)
            assert (await ws.receive(timeout=WAIT_S)).data == "x" * 1000
            async with asyncio.timeout(WAIT_S):
                await ws.close()

        def access_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]

        await wait_until(lambda: bool(access_lines()), "an access line")
    (line,) = access_lines()
    assert '"GET /ws" -> test-target 101 1008 ' in line, line
    assert line.endswith(" [closed]"), line  # a close handshake, not "client went away"
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


@BOTH_WAYS
async def test_wss_target_through_an_https_proxy_tunnel_carries_and_closes(
    aiohttp_server, start_proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ws_path: str
) -> None:
    """A wss:// target reached through HTTPS_PROXY (CONNECT, then TLS inside the
    tunnel): a 4 MiB message goes there and back, and the target's close code reaches the
    client."""
    # Not a loopback name (loopback targets never go through the environment's proxy); the
    # tunnel reaches 127.0.0.1 whatever the name.
    local_ca = LocalCA.issue(tmp_path, "target.test")
    upstream = await aiohttp_server(ws_echo_app(), ssl=local_ca.server_context())
    tunnel = ConnectTunnel()
    await tunnel.start()
    try:
        monkeypatch.setenv("HTTPS_PROXY", tunnel.url)
        proxy = await start_proxy(f"https://target.test:{upstream.port}", ca_bundle=str(local_ca.ca_path))
        message = bytes(range(256)) * (4 * MIB // 256)
        async with ws_client(ws_url(proxy.port), max_size=None) as ws:
            await ws.send(message)
            async with asyncio.timeout(WAIT_S):
                assert await ws.recv() == message
            await ws.send("close:4003:tunnelled")
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT_S):
                    await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "tunnelled")
        assert [c["method"] for c in tunnel.connects] == ["CONNECT"]
    finally:
        await tunnel.close()


@RELAY_ONLY
async def test_an_internal_error_after_the_101_is_logged(
    aiohttp_server, start_proxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure of the proxy's own after the 101 has gone out cannot be answered with an error
    page; the connection is closed, and the log says what failed (it once said nothing)."""

    def broken_start(self: wsrelay.WebSocketRelay) -> None:
        raise RuntimeError("relay could not start")

    monkeypatch.setattr(wsrelay.WebSocketRelay, "start", broken_start)
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    with caplog.at_level(logging.ERROR):
        async with ws_client(ws_url(proxy.port)) as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    await ws.recv()
        await wait_until(lambda: any(r.exc_info for r in caplog.records), "an error logged")
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert "after the response had started" in logged.getMessage()
    assert "relay could not start" in str(logged.exc_info[1])


@RELAY_ONLY
@pytest.mark.parametrize("who", ["client", "target"])
async def test_access_line_says_which_side_dropped(
    aiohttp_server, start_proxy, caplog: pytest.LogCaptureFixture, who: str
) -> None:
    """A WebSocket whose client or target vanished without a close frame is logged as
    ``[client dropped]`` or ``[target dropped]``, so a person reading the log knows which end
    to look at."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)  # the first frame's start: the session has begun
        writer.transport.abort()

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        if who == "client":
            upstream = await aiohttp_server(recording_app())
            proxy = await start_proxy(str(upstream.make_url("/")))
            await drop_client_mid_session(proxy.port)
        else:
            async with raw_target(hang_up) as (_, port):
                proxy = await start_proxy(f"http://127.0.0.1:{port}")
                async with raw_client(proxy.port) as (reader, writer):
                    writer.write(client_frame(Opcode.TEXT, b"hi"))
                    frames = await read_until_close(reader)
                assert frames[-1][0] == Opcode.CLOSE

        def access_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]

        await wait_until(lambda: bool(access_lines()), "an access line")
    (line,) = access_lines()
    assert line.endswith(f" [{who} dropped]"), line
