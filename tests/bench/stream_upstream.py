"""Benchmark upstream for streams: SSE source and WebSocket echo on 127.0.0.1:PORT (argv[1]).

``GET /sse?n=N&gap=S`` sends N events S seconds apart, then ``data: [DONE]``; each event carries
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine) taken just
before it is written, so a client on the same machine can tell how long the event took to
arrive. ``GET /ws`` echoes every message back as it came (binary or text). ``GET /served``
says how many SSE streams were asked for so far: a replayed stream must not add to it.

Small responses, downloads and uploads are served by the nginx origin, not here.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import WSMsgType, web

SSE_REQUESTS = web.AppKey("sse_requests", list[int])


async def sse(request: web.Request) -> web.StreamResponse:
    request.app[SSE_REQUESTS][0] += 1
    count = int(request.query.get("n", "100"))
    gap_s = float(request.query.get("gap", "0.01"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for index in range(count):
        await response.write(f'data: {{"i":{index},"t":{time.monotonic()!r}}}\n\n'.encode())
        await asyncio.sleep(gap_s)
    await response.write(b"data: [DONE]\n\n")
    return response


async def served(request: web.Request) -> web.Response:
    return web.Response(text=str(request.app[SSE_REQUESTS][0]))


async def echo(request: web.Request) -> web.WebSocketResponse:
    # No permessage-deflate: compressing would make the upstream, not the proxy, the cost.
    ws = web.WebSocketResponse(compress=False, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


def main() -> None:
    app = web.Application()
    app[SSE_REQUESTS] = [0]
    app.router.add_get("/sse", sse)
    app.router.add_get("/served", served)
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
