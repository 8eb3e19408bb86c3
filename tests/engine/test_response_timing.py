"""When the response head reaches the tool: at once, unless its body is already there too.

The proxy holds a response's status line and headers back only while it has the first body
bytes in hand, so both leave in one send (a small answer costs one write instead of two). A
target that sends its headers and then takes its time must still have them passed on at once:
a tool shows "connected" or starts its timer on them, and an SSE stream's first event may be
seconds away.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

# How long the target waits between its headers and its first body bytes; the tool must have
# the headers well before.
BODY_DELAY_S = 0.8

HEADER_KINDS = {
    "known length": {"Content-Type": "application/json", "Content-Length": "2"},
    "event stream": {"Content-Type": "text/event-stream"},
}


def _slow_body_app(headers: dict[str, str], sent_at: list[float]) -> web.Application:
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)  # aiohttp sends a StreamResponse's headers right here
        await asyncio.sleep(BODY_DELAY_S)
        sent_at.append(time.monotonic())
        await response.write(b"{}")
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app


@pytest.mark.parametrize("kind", list(HEADER_KINDS))
async def test_headers_are_not_held_for_a_slow_body(kind: str, aiohttp_server, start_proxy) -> None:
    """The tool gets the status before the target sends any body byte."""
    sent_at: list[float] = []
    upstream = await aiohttp_server(_slow_body_app(HEADER_KINDS[kind], sent_at))
    proxy = await start_proxy(str(upstream.make_url("")))
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/slow") as response:
        headers_at = time.monotonic()
        assert response.status == 200
        assert await response.read() == b"{}"
    assert sent_at, "the target never sent its body"
    assert headers_at < sent_at[0] - BODY_DELAY_S / 2, "the headers waited for the body"


async def test_small_answers_in_a_row_arrive_whole(aiohttp_server, start_proxy) -> None:
    """Headers held for their body still go out with it: many small and empty answers on one
    keep-alive connection each arrive complete, none waits for the next."""

    async def small(request: web.Request) -> web.Response:
        size = int(request.query["n"])
        return web.Response(body=b"x" * size, status=204 if size == 0 else 200)

    app = web.Application()
    app.router.add_get("/small", small)
    upstream = await aiohttp_server(app)
    proxy = await start_proxy(str(upstream.make_url("")))
    async with aiohttp.ClientSession() as client:
        for size in (0, 1, 100, 0, 70_000, 3):
            async with asyncio.timeout(5), client.get(f"{proxy.url}/small?n={size}") as response:
                assert response.status == (204 if size == 0 else 200)
                assert await response.read() == b"x" * size
