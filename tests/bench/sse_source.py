"""Benchmark helper: SSE source and upload sink on 127.0.0.1:PORT (argv[1]).

``GET /sse?n=N&gap=S`` sends N events S seconds apart, each stamped with ``time.monotonic()``;
``POST /upload`` reads and discards the body and answers with its size.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web


async def sse(request: web.Request) -> web.StreamResponse:
    count = int(request.query.get("n", "100"))
    gap = float(request.query.get("gap", "0.01"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(count):
        await response.write(f"data: {json.dumps({'i': index, 't': time.monotonic()})}\n\n".encode())
        await asyncio.sleep(gap)
    await response.write(b"data: [DONE]\n\n")
    return response


async def upload(request: web.Request) -> web.Response:
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return web.Response(text=str(size))


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_get("/sse", sse)
    app.router.add_post("/upload", upload)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
