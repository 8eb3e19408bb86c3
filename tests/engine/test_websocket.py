"""WebSocket bridging seen from both ends: what a tool sends is what the target gets, and back.

Issue 3, item 4 (and the header and safety rules of items 3 and 7 as they apply to an upgrade):
text and binary messages up to 16 MiB, the target's choice of subprotocol, ping and pong, close
codes and reasons in both directions, 50 connections at once, a refused upgrade, the headers of
the upstream handshake, and what a stopping proxy does to open sockets. Targets are real aiohttp
servers on 127.0.0.1; clients are the ``websockets`` library (what most Python tools use) and
aiohttp's client (which shows pings, pongs and close frames as messages).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from netservers import LocalCA, LoopbackResolver
from upstreams import dead_port, raw_exchange, ws_echo_app
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from wsclients import read_frame, ws_client

from desktop.config.model import Secret

MIB = 1024 * 1024
# Deadlock guard on every wait: a proxy that hangs fails the test instead of stalling the run.
# It is a correctness bound, not a timing claim.
WAIT_S = 10.0
CONCURRENT_SOCKETS = 50
MESSAGES_PER_SOCKET = 20


# --- a recording target -----------------------------------------------------------------------


@dataclass
class Probe:
    """What the recording target saw: handshakes, control frames and close frames."""

    handshakes: list[dict[str, Any]] = field(default_factory=list)
    pings: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    pongs: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closes: asyncio.Queue[tuple[int | None, str]] = field(default_factory=asyncio.Queue)
    # When the target closed first: the code of the close frame it got back, if any.
    close_replies: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    def header(self, name: str) -> list[str]:
        """Values of ``name`` in the last handshake, in the order they arrived."""
        return [v for k, v in self.handshakes[-1]["headers"] if k.lower() == name.lower()]


PROBE = web.AppKey("probe", Probe)


def probe_app(
    probe: Probe,
    *,
    protocols: tuple[str, ...] = (),
    pong_prefix: bytes = b"target:",
    ping_first: bytes | None = None,
    handshake_headers: dict[str, str] | None = None,
) -> web.Application:
    """``/ws``: records the handshake, answers pings itself with ``pong_prefix + data`` (so a
        client can tell the target's pong from one the proxy made up), records pongs and close
        frames (code and reason), and echoes text and binary; a text ``close:CODE:REASON`` makes it
    close that way and record the code the client answered with. ``ping_first`` makes it ping the
        client as soon as the connection opens."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        probe.handshakes.append(
            {
                "raw_path": request.raw_path,
                "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            }
        )
        ws = web.WebSocketResponse(
            protocols=protocols,
            max_msg_size=0,
            autoping=False,
            autoclose=True,
        )
        ws.headers.update(handshake_headers or {})
        await ws.prepare(request)
        if ping_first is not None:
            await ws.ping(ping_first)
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                probe.close_replies.put_nowait(ws.close_code)
                break
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                probe.pings.put_nowait(msg.data)
                await ws.pong(pong_prefix + msg.data)
            elif msg.type is WSMsgType.PONG:
                probe.pongs.put_nowait(msg.data)
                await ws.send_str("target got pong " + msg.data.decode())
            elif msg.type is WSMsgType.CLOSE:
                probe.closes.put_nowait((msg.data, msg.extra or ""))
                break
            else:
                # The connection dropped without a close frame.
                probe.closes.put_nowait((None, msg.type.name))
                break
        return ws

    app = web.Application()
    app[PROBE] = probe
    app.router.add_get("/ws", handler)
    return app


# --- helpers ----------------------------------------------------------------------------------


def ws_url(proxy_url: str, path: str = "/ws") -> str:
    return proxy_url.replace("http://", "ws://", 1) + path


async def next_of(queue: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(WAIT_S):
        return await queue.get()


async def close_received(ws: ClientConnection) -> Close:
    """Read until the connection closes; the close frame the client got (it must get one)."""
    async def until_closed() -> None:
        async with asyncio.timeout(WAIT_S):
            while True:
                await ws.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await until_closed()
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return closed.value.rcvd


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def big_text(size: int) -> str:
    """``size`` bytes of UTF-8 text with multi-byte characters, so a split or re-encoded
    character would show."""
    unit = "token é 日本 🙂 " * 4  # ASCII, 2-, 3- and 4-byte characters
    encoded = unit.encode()
    text = unit * (size // len(encoded))
    return text + "x" * (size - len(text.encode()))


# --- messages ---------------------------------------------------------------------------------


async def test_small_text_and_binary_messages_echo_through_proxy(aiohttp_server, start_proxy) -> None:
    """A chat tool's short messages come back exactly as sent, empty ones included."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    messages: list[str | bytes] = ["hello", "", "é 🙂", b"\x00\x01\xff", b"", os.urandom(1000)]
    async with ws_client(ws_url(proxy.url)) as ws:
        for message in messages:
            await ws.send(message)
            async with asyncio.timeout(WAIT_S):
                echoed = await ws.recv()
            assert type(echoed) is type(message)
            assert echoed == message


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_16_mib_messages_arrive_intact_with_websockets_client(
    aiohttp_server, start_proxy, kind: str
) -> None:
    """A 16 MiB message (a large prompt or an audio buffer) goes out and comes back unchanged,
    with no 1009 "message too big" from the proxy's own default limits."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    message: str | bytes = big_text(16 * MIB) if kind == "text" else os.urandom(16 * MIB)
    async with ws_client(ws_url(proxy.url), max_size=None) as ws:
        await ws.send(message)
        async with asyncio.timeout(WAIT_S):
            echoed = await ws.recv()
    assert type(echoed) is type(message)
    assert len(echoed) == len(message)
    assert sha(echoed) == sha(message)


async def test_16_mib_messages_arrive_intact_with_aiohttp_client(aiohttp_server, start_proxy) -> None:
    """The same holds for aiohttp's client, which does not offer compression: text and
    binary of 16 MiB each come back unchanged and in order."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    text = big_text(16 * MIB)
    data = os.urandom(16 * MIB)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(proxy.url), max_msg_size=0, autoping=False) as ws,
    ):
        await ws.send_str(text)
        await ws.send_bytes(data)
        first = await ws.receive(timeout=WAIT_S)
        second = await ws.receive(timeout=WAIT_S)
    assert first.type is WSMsgType.TEXT
    assert sha(first.data) == sha(text)
    assert second.type is WSMsgType.BINARY
    assert sha(second.data) == sha(data)


# --- subprotocols -----------------------------------------------------------------------------


async def test_client_gets_the_subprotocol_the_target_picks(aiohttp_server, start_proxy) -> None:
    """A client offering several subprotocols ends up speaking the one the target chose, and
    the target was offered all of them in the client's order."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, protocols=("chat.v3", "chat.v2")))
    proxy = await start_proxy(str(upstream.make_url("/")))
    offered = ["chat.v1", "chat.v2", "chat.v3"]
    async with ws_client(ws_url(proxy.url), subprotocols=offered) as ws:
        assert ws.subprotocol == "chat.v2"
        await ws.send("still open")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "still open"
    offered_upstream = [p.strip() for v in probe.header("Sec-WebSocket-Protocol") for p in v.split(",")]
    assert offered_upstream == offered


async def test_no_subprotocol_offered_means_none_chosen(aiohttp_server, start_proxy) -> None:
    """A client that offers no subprotocol gets none, and the target is offered none."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, protocols=("chat.v1",)))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        assert ws.subprotocol is None
    assert probe.header("Sec-WebSocket-Protocol") == []


async def test_target_that_picks_no_subprotocol_gives_the_client_none(aiohttp_server, start_proxy) -> None:
    """When the target supports none of the offered subprotocols, the client is told none was
    chosen (not one the proxy picked for it)."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol is None


async def test_subprotocols_offered_in_several_headers_all_reach_the_target(
    aiohttp_server, start_proxy
) -> None:
    """RFC 6455 §11.3.4 lets a client repeat Sec-WebSocket-Protocol; every offer counts, so the
    target can pick one from the second header."""
    upstream = await aiohttp_server(ws_echo_app(protocols=("chat.v2",)))
    proxy = await start_proxy(str(upstream.make_url("/")))
    handshake = (
        "GET /ws HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{proxy.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: chat.v1\r\n"
        "Sec-WebSocket-Protocol: chat.v2\r\n"
        "\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(handshake)
        async with asyncio.timeout(WAIT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines[0]
    chosen = [
        line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-protocol:")
    ]
    assert chosen == ["chat.v2"]


# --- ping / pong ------------------------------------------------------------------------------


async def test_client_ping_is_answered_by_the_target(aiohttp_server, start_proxy) -> None:
    """A tool's keepalive ping gets its pong: ``await ws.ping()`` resolves."""
    upstream = await aiohttp_server(ws_echo_app())  # aiohttp answers pings itself
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        pong = await ws.ping(b"are-you-there")
        async with asyncio.timeout(WAIT_S):
            await pong


async def test_client_ping_reaches_target_and_target_pong_reaches_client(aiohttp_server, start_proxy) -> None:
    """The ping travels to the target and the pong the client gets is the target's own (its
    payload is marked by the target), so a dead target is not hidden by a proxy that answers
    pings itself."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, pong_prefix=b"target:"))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(proxy.url), autoping=False) as ws,
    ):
        await ws.ping(b"p1")
        assert await next_of(probe.pings) == b"p1"
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type is WSMsgType.PONG
        assert msg.data == b"target:p1"


async def test_target_ping_reaches_client_and_client_pong_reaches_target(aiohttp_server, start_proxy) -> None:
    """A target that pings to check its client is alive sees that client's own pong (the
    client marks its payload), not one the proxy made up."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, ping_first=b"srv-ping"))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(proxy.url), autoping=False) as ws,
    ):
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type is WSMsgType.PING
        assert msg.data == b"srv-ping"
        await ws.pong(b"client:" + msg.data)
        assert await next_of(probe.pongs) == b"client:srv-ping"
        reply = await ws.receive(timeout=WAIT_S)
        assert reply.type is WSMsgType.TEXT
        assert reply.data == "target got pong client:srv-ping"


async def test_target_ping_is_answered_by_websockets_client(aiohttp_server, start_proxy) -> None:
    """With the ``websockets`` client, which answers pings on its own, the target's ping gets
    the client's pong with the same payload."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, ping_first=b"srv-ping"))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        assert await next_of(probe.pongs) == b"srv-ping"
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "target got pong srv-ping"


# --- close codes ------------------------------------------------------------------------------


async def test_client_close_code_and_reason_reach_target(aiohttp_server, start_proxy) -> None:
    """A client that closes with 4001 "bye" is seen by the target closing with 4001 "bye",
    not with the proxy's own 1000."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
        async with asyncio.timeout(WAIT_S):
            await ws.close(code=4001, reason="bye")
    assert await next_of(probe.closes) == (4001, "bye")


async def test_client_close_code_reaches_target_with_aiohttp_client(
    aiohttp_server, start_proxy, ws_path: str
) -> None:
    """The same with aiohttp's client, and the client's close handshake completes: it gets a
    close frame back. Relayed, that is the target's own answer (aiohttp's server answers 1000);
    bridged, the bridge answers with the client's code, the usual echo."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(proxy.url))
        async with asyncio.timeout(WAIT_S):
            assert await ws.close(code=4001, message=b"bye")
        assert ws.close_code == (1000 if ws_path == "relay" else 4001)
    assert await next_of(probe.closes) == (4001, "bye")


async def test_target_close_code_and_reason_reach_client(aiohttp_server, start_proxy) -> None:
    """A target that closes with 4002 "done" is seen by the client closing with 4002 "done",
    and the close handshake completes: the target gets the client's answer."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("close:4002:done")
        close = await close_received(ws)
    assert (close.code, close.reason) == (4002, "done")
    # The client echoes the close code (RFC 6455 §5.5.1), and that echo reached the target.
    assert await next_of(probe.close_replies) == 4002


async def test_target_close_code_reaches_aiohttp_client(aiohttp_server, start_proxy) -> None:
    """aiohttp's client sees the target's close as a CLOSE message with 4002 and "done"."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(proxy.url), autoclose=False) as ws,
    ):
        await ws.send_str("close:4002:done")
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4002, "done")


async def test_tls_target_carries_large_messages_both_ways(aiohttp_server, start_proxy, tmp_path) -> None:
    """A wss:// target (a private CA's certificate, trusted through the CA bundle) carries 4 MiB
    binary and 1 MiB text messages both ways, like a plain one."""
    local_ca = LocalCA.issue(tmp_path, "localhost")
    upstream = await aiohttp_server(ws_echo_app(), ssl=local_ca.server_context())
    proxy = await start_proxy(
        f"https://localhost:{upstream.port}", resolver=LoopbackResolver(), ca_bundle=str(local_ca.ca_path)
    )
    binary, text = os.urandom(4 * MIB), big_text(MIB)
    async with ws_client(ws_url(proxy.url), max_size=None) as ws:
        for message in (binary, text, b"small", binary):
            await ws.send(message)
            async with asyncio.timeout(WAIT_S):
                echoed = await ws.recv()
            assert sha(echoed) == sha(message)


# --- many at once -----------------------------------------------------------------------------


async def test_50_concurrent_connections_never_cross(aiohttp_server, start_proxy) -> None:
    """Fifty tools talking at once each get back only their own messages, in order, over fifty
    separate connections to the target."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    all_open = asyncio.Barrier(CONCURRENT_SOCKETS)

    async def talk(index: int) -> list[str]:
        headers = {"X-Test-Id": f"conn-{index}"}
        async with ws_client(ws_url(proxy.url), additional_headers=headers) as ws:
            await all_open.wait()  # every connection is bridged before anyone speaks
            for n in range(MESSAGES_PER_SOCKET):
                await ws.send(f"conn-{index}/msg-{n}")
            received = []
            async with asyncio.timeout(WAIT_S):
                for _ in range(MESSAGES_PER_SOCKET):
                    received.append(await ws.recv())
            return received

    results = await asyncio.gather(*(talk(i) for i in range(CONCURRENT_SOCKETS)))
    for index, received in enumerate(results):
        assert received == [f"conn-{index}/msg-{n}" for n in range(MESSAGES_PER_SOCKET)]
    seen_ids = [v for shake in probe.handshakes for k, v in shake["headers"] if k.lower() == "x-test-id"]
    assert sorted(seen_ids) == sorted(f"conn-{i}" for i in range(CONCURRENT_SOCKETS))


# --- refused upgrades -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_upgrade_refused_by_target_gives_client_that_http_status(
    aiohttp_server, start_proxy, status: int, ws_path: str
) -> None:
    """A target that refuses the upgrade (bad key, no such endpoint) gives the client an HTTP
    error with the same status at once, not a hang. Relayed, it is the target's own answer,
    body and headers (its reason, e.g. which key it rejected); bridged (aiohttp's client keeps
    no body), a JSON message naming the target."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=status, headers={"X-Upstream": "yes"})

    app = web.Application()
    app.router.add_get("/ws", refuse)
    upstream = await aiohttp_server(app)
    proxy = await start_proxy(str(upstream.make_url("/")))
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(WAIT_S), ws_client(ws_url(proxy.url)):
            pass
    response = refused.value.response
    assert response.status_code == status
    body = json.loads(response.body)
    if ws_path == "relay":
        assert body == {"error": "nope"}
        assert response.headers["X-Upstream"] == "yes"
    else:
        assert "test-target" in body["error"]["message"]


async def test_target_answering_upgrade_with_plain_200_gives_502(aiohttp_server, start_proxy) -> None:
    """A target that answers the upgrade as an ordinary request (200, no 101) is reported to the
    client as a bad gateway, not passed on as a WebSocket that never opens."""

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="not a websocket")

    app = web.Application()
    app.router.add_get("/ws", plain)
    upstream = await aiohttp_server(app)
    proxy = await start_proxy(str(upstream.make_url("/")))
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(WAIT_S), ws_client(ws_url(proxy.url)):
            pass
    assert refused.value.response.status_code == 502


async def test_upgrade_to_unreachable_target_gives_502(start_proxy) -> None:
    """With the target down, the client's connect fails with 502 and a JSON error at once."""
    proxy = await start_proxy(f"http://127.0.0.1:{dead_port()}")
    with pytest.raises(InvalidStatus) as refused:
        async with asyncio.timeout(WAIT_S), ws_client(ws_url(proxy.url)):
            pass
    assert refused.value.response.status_code == 502
    assert "error" in json.loads(refused.value.response.body)


# --- headers and origin -----------------------------------------------------------------------


async def test_configured_key_and_client_headers_reach_target_handshake(aiohttp_server, start_proxy) -> None:
    """The key configured for the target reaches the target's handshake in place of the
    client's, the client's own headers and path pass unchanged, and Host is the target's."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(
        str(upstream.make_url("/")),
        add_headers=(("Authorization", Secret("Bearer sk-test")),),
    )
    headers = {"Authorization": "Bearer client-placeholder", "X-Client-Header": "kept as is"}
    async with ws_client(ws_url(proxy.url, "/ws?model=gpt-x&a=%2F"), additional_headers=headers) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
    assert probe.handshakes[-1]["raw_path"] == "/ws?model=gpt-x&a=%2F"
    assert probe.header("Authorization") == ["Bearer sk-test"]
    assert probe.header("X-Client-Header") == ["kept as is"]
    assert probe.header("Host") == [f"127.0.0.1:{upstream.port}"]
    assert probe.header("X-Forwarded-For") == ["127.0.0.1"]


async def test_target_handshake_gets_no_header_the_client_did_not_send(aiohttp_server, start_proxy) -> None:
    """aiohttp's client would add Accept, Accept-Encoding and User-Agent to the target's
    handshake; a client that sent none of them gets none of them sent for it."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url), user_agent_header=None) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
    for name in ("User-Agent", "Accept", "Accept-Encoding", "Content-Type"):
        assert probe.header(name) == [], name


async def test_target_base_path_prefixes_websocket_path(aiohttp_server, start_proxy) -> None:
    """A target URL with a base path (a gateway) gets the WebSocket path under that base."""
    probe = Probe()
    app = web.Application()
    app.add_subapp("/gateway/", probe_app(probe))
    upstream = await aiohttp_server(app)
    proxy = await start_proxy(str(upstream.make_url("/gateway")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
    assert probe.handshakes[-1]["raw_path"] == "/gateway/ws"


async def test_target_handshake_response_headers_reach_client(aiohttp_server, start_proxy) -> None:
    """Headers the target sends with its 101 (a request id a user quotes to support, a
    rate-limit counter) reach the client, as for any other response."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe, handshake_headers={"X-Request-Id": "req-123"}))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        assert ws.response is not None
        assert ws.response.headers.get_all("X-Request-Id") == ["req-123"]


async def test_local_page_origin_may_open_websocket(aiohttp_server, start_proxy) -> None:
    """A page served from localhost (a dev server on any port) may open a WebSocket through the
    proxy by default."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url), origin="http://localhost:5173") as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
    assert len(probe.handshakes) == 1


async def test_foreign_page_origin_cannot_open_websocket(aiohttp_server, start_proxy) -> None:
    """A web page from elsewhere cannot use the proxy's key over a WebSocket: it gets 403 and the
    target never sees a handshake."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(ws_url(proxy.url), origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    assert probe.handshakes == []


async def test_websocket_with_foreign_host_is_refused(aiohttp_server, start_proxy) -> None:
    """A DNS-rebinding page (Host not this machine) cannot open a WebSocket to the target."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    handshake = (
        "GET /ws HTTP/1.1\r\n"
        f"Host: attacker.example:{proxy.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    answer = await raw_exchange(proxy.port, handshake)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500
    assert probe.handshakes == []


# --- stopping ---------------------------------------------------------------------------------


async def test_stopping_proxy_closes_open_websockets_with_1001(aiohttp_server, start_proxy) -> None:
    """When the user stops the proxy, a connected tool sees "going away" (1001) with a reason,
    instead of a dropped connection or a socket left hanging."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
        async with asyncio.timeout(WAIT_S):
            await proxy.service.stop()
        close = await close_received(ws)
    assert close.code == 1001
    assert close.reason


async def test_stopping_proxy_tells_target_going_away(aiohttp_server, start_proxy) -> None:
    """The target also learns the bridge is going away (1001), not that the client finished
    normally (1000): a realtime session is not mistaken for one the user ended."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("hi")
        async with asyncio.timeout(WAIT_S):
            assert await ws.recv() == "hi"
        async with asyncio.timeout(WAIT_S):
            await proxy.service.stop()
    code, _reason = await next_of(probe.closes)
    assert code == 1001


async def test_stopping_proxy_closes_many_websockets_with_1001(aiohttp_server, start_proxy) -> None:
    """Every open WebSocket is told, not just the first: ten connected aiohttp clients all get
    a CLOSE message with 1001."""
    upstream = await aiohttp_server(ws_echo_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(ws_url(proxy.url), autoclose=False) for _ in range(10)]
        for ws in sockets:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=WAIT_S)).data == "hi"

        async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
            msg = await ws.receive(timeout=WAIT_S)
            code = msg.data if msg.type is WSMsgType.CLOSE else None
            await ws.close()
            return code

        watchers = [asyncio.create_task(closed_with(ws)) for ws in sockets]
        async with asyncio.timeout(WAIT_S):
            await proxy.service.stop()
        codes = await asyncio.gather(*watchers)
    assert codes == [1001] * len(sockets)


# --- what the carrying itself must not change -------------------------------------------------


def streaming_app(sent: list[float]) -> web.Application:
    """``/ws``: on a text ``send:N:SIZE`` sends N binary messages of SIZE bytes as fast as its
    socket takes them and records when the last one was handed over; on ``drop`` cuts its
    connection without a close frame."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            if msg.data == "drop":
                assert request.transport is not None
                request.transport.abort()
                break
            _, count, size = msg.data.split(":")
            payload = os.urandom(int(size))
            for _ in range(int(count)):
                await ws.send_bytes(payload)
            sent.append(asyncio.get_running_loop().time())
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_target_dropping_without_close_frame_tells_client_1011(aiohttp_server, start_proxy) -> None:
    """A target whose connection drops mid-session leaves the client a close frame saying so
    (1011 with a reason), not a bare dropped socket it might take for a network fault."""
    upstream = await aiohttp_server(streaming_app([]))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with ws_client(ws_url(proxy.url)) as ws:
        await ws.send("drop")
        close = await close_received(ws)
    assert close.code == 1011
    assert "lost" in close.reason


async def test_slow_client_holds_the_target_back_instead_of_filling_memory(
    aiohttp_server, start_proxy
) -> None:
    """While the client reads nothing, the target cannot hand over 64 MiB (the proxy stops
    reading once its buffer is full, as TCP would without it); once the client reads, every
    byte arrives."""
    sent: list[float] = []
    upstream = await aiohttp_server(streaming_app(sent))
    proxy = await start_proxy(str(upstream.make_url("/")))
    count, size = 64, MIB
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(proxy.url), max_msg_size=0, compress=0)
        await ws.send_str(f"send:{count}:{size}")
        await asyncio.sleep(1.0)
        assert sent == [], "the target sent 64 MiB to a client that read none of it"
        received = 0
        async with asyncio.timeout(WAIT_S * 3):
            for _ in range(count):
                msg = await ws.receive()
                assert msg.type is WSMsgType.BINARY
                received += len(msg.data)
        assert received == count * size
        assert len(sent) == 1
        await ws.close()


async def test_compression_the_client_offers_is_agreed_with_the_target(aiohttp_server, start_proxy) -> None:
    """A client offering permessage-deflate (``websockets`` does by default) gets it when the
    target supports it, and compressible messages of 1 MiB arrive intact."""
    probe = Probe()
    upstream = await aiohttp_server(probe_app(probe))
    proxy = await start_proxy(str(upstream.make_url("/")))
    text = big_text(MIB)
    async with ws_client(ws_url(proxy.url), max_size=None) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send(text)
        async with asyncio.timeout(WAIT_S):
            echoed = await ws.recv()
    assert "permessage-deflate" in agreed
    assert any("permessage-deflate" in offer for offer in probe.header("Sec-WebSocket-Extensions"))
    assert sha(echoed) == sha(text)


async def test_stopping_mid_message_lets_the_message_finish_before_1001(
    aiohttp_server, start_proxy
) -> None:
    """Stopping while a 16 MiB message is on its way does not cut it: the client gets the whole
    message, then 1001. The client here is a raw socket with a small receive buffer that reads
    nothing until the proxy is stopping, so the proxy is inside the message when it stops."""
    upstream = await aiohttp_server(streaming_app([]))
    proxy = await start_proxy(str(upstream.make_url("/")))
    size = 16 * MIB
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4 * MIB)
    try:
        writer.write(
            (
                "GET /ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{proxy.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(WAIT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(Frame(Opcode.TEXT, f"send:1:{size}".encode()).serialize(mask=True, extensions=[]))
        await asyncio.sleep(0.5)
        stopping = asyncio.create_task(proxy.service.stop())
        await asyncio.sleep(0.1)
        async with asyncio.timeout(WAIT_S):
            opcode, payload = await read_frame(reader)
            assert (opcode, len(payload)) == (0x2, size)
            opcode, payload = await read_frame(reader)
        assert opcode == 0x8
        assert int.from_bytes(payload[:2], "big") == 1001
        writer.write(Frame(Opcode.CLOSE, payload).serialize(mask=True, extensions=[]))
        async with asyncio.timeout(WAIT_S):
            await stopping
    finally:
        writer.close()
