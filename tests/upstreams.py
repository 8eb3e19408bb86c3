"""Small aiohttp apps used as targets in tests, and raw-socket helpers.

Every upstream here is a real HTTP server on 127.0.0.1 (started with pytest-aiohttp's
``aiohttp_server``); nothing is mocked. The echo target answers with what it received, byte for
byte where it matters (raw request target, raw headers in order, body digest), so a test can
compare what the client sent with what the target saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from dataclasses import dataclass, field

from aiohttp import web

SEEN = web.AppKey("seen", "Seen")
CLOSES = web.AppKey("closes", list)

__all__ = [
    "CLOSES",
    "SEEN",
    "Seen",
    "dead_port",
    "echo_app",
    "raw_exchange",
    "sse_app",
    "ws_echo_app",
]


@dataclass
class Seen:
    """What a test target received, for tests to inspect afterwards."""

    requests: list[dict[str, object]] = field(default_factory=list)
    # Set when a streaming handler noticed its client (the proxy) went away.
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


async def _echo(request: web.Request) -> web.StreamResponse:
    seen: Seen = request.app[SEEN]
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    info = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_size": size,
        "body_sha256": digest.hexdigest(),
        "version": f"{request.version.major}.{request.version.minor}",
    }
    seen.requests.append(info)
    if request.method == "HEAD":
        return web.Response(status=200, headers={"Content-Length": "1234", "Content-Type": "text/plain"})
    return web.Response(body=json.dumps(info).encode(), content_type="application/json")


def echo_app(seen: Seen | None = None) -> web.Application:
    """Answers every method and path with a JSON record of what it received."""
    app = web.Application(client_max_size=0)
    app[SEEN] = seen or Seen()
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


def sse_app(*, events: int = 5, gap_s: float = 0.05, seen: Seen | None = None) -> web.Application:
    """``/sse`` streams ``events`` Server-Sent Events ``gap_s`` apart (``?n=`` and ``?gap=``
    override), each carrying its send time from ``time.monotonic()`` so a test on the same
    machine can measure delay."""
    import time

    async def stream(request: web.Request) -> web.StreamResponse:
        count = int(request.query.get("n", events))
        gap = float(request.query.get("gap", gap_s))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for index in range(count):
                payload = json.dumps({"i": index, "t": time.monotonic()})
                await response.write(f"data: {payload}\n\n".encode())
                await asyncio.sleep(gap)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            request.app[SEEN].disconnected.set()
            raise
        await response.write_eof()
        return response

    app = web.Application()
    app[SEEN] = seen or Seen()
    app.router.add_get("/sse", stream)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


def ws_echo_app(*, protocols: tuple[str, ...] = ()) -> web.Application:
    """``/ws`` echoes every message; a text ``close:CODE:REASON`` makes it close that way."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT and msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        request.app[CLOSES].append((ws.close_code, request.headers.get("X-Test-Id")))
        return ws

    app = web.Application()
    app[CLOSES] = []
    app.router.add_get("/ws", handler)
    return app


def dead_port() -> int:
    """A port on 127.0.0.1 that was just bound and closed: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def raw_exchange(port: int, data: bytes, *, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Send raw bytes to ``host:port`` and return everything read until the peer closes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
