"""Soak upstreams: two aiohttp apps, "one" on 127.0.0.1:argv[1] and "two" on 127.0.0.1:argv[2].

Both answer the same routes, each naming itself, so the soak can tell which target answered a
request on the proxy's main port (it follows ``active``) or a target's own port (always "two"):

- ``GET /plain``: 200, JSON ``{"upstream": NAME, "pad": "x" * PAD_BYTES}``;
- ``POST /echo``: 200, JSON ``{"upstream": NAME, "size": N, "sha256": HEX}`` of the body read;
- ``GET /sse?n=N&gap=S``: N events ``data: {"upstream": NAME, "i": I}`` S seconds apart, then
  ``data: [DONE]``;
- ``GET /ws``: a WebSocket that echoes every message as it came.

Runs in a process of its own, so that serving does not share a CPU with the soak's clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from aiohttp import WSMsgType, web

# The /plain body's padding: a response of about 2 KiB, a short completion's size.
PAD_BYTES = 2000
NAME = web.AppKey("name", str)


async def plain(request: web.Request) -> web.Response:
    return web.json_response({"upstream": request.app[NAME], "pad": "x" * PAD_BYTES})


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"upstream": request.app[NAME], "size": size, "sha256": digest.hexdigest()})


async def sse(request: web.Request) -> web.StreamResponse:
    count = int(request.query.get("n", "20"))
    gap_s = float(request.query.get("gap", "0.02"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for index in range(count):
        event = json.dumps({"upstream": request.app[NAME], "i": index})
        await response.write(f"data: {event}\n\n".encode())
        await asyncio.sleep(gap_s)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def make_app(name: str) -> web.Application:
    app = web.Application()
    app[NAME] = name
    app.router.add_get("/plain", plain)
    app.router.add_post("/echo", echo)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", websocket_echo)
    return app


async def serve(ports: dict[str, int]) -> None:
    runners = []
    for name, port in ports.items():
        runner = web.AppRunner(make_app(name), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        await asyncio.Event().wait()  # until the soak terminates this process
    finally:
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    asyncio.run(serve({"one": int(sys.argv[1]), "two": int(sys.argv[2])}))


if __name__ == "__main__":
    main()
