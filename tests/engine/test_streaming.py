"""Streams pass event by event, many at once, and end the way the target ended them."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time

import aiohttp
import httpx
import pytest
from aiohttp import web
from openai import AsyncOpenAI
from upstreams import Seen, sse_app

from desktop.engine.accesslog import ACCESS_LOGGER


async def test_sse_events_arrive_one_by_one(aiohttp_server, start_proxy) -> None:
    """Each token event reaches the tool as soon as the target sends it, not batched: every
    event arrives before the target has sent the next one (0.3 s later)."""
    upstream = await aiohttp_server(sse_app())
    proxy = await start_proxy(str(upstream.make_url("")))
    arrivals: list[tuple[float, float]] = []
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/sse?n=5&gap=0.3") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        async for line in response.content:
            if line.startswith(b"data: {"):
                arrivals.append((time.monotonic(), json.loads(line[6:])["t"]))
    assert len(arrivals) == 5
    for (received, _), (_, next_sent) in itertools.pairwise(arrivals):
        assert received < next_sent, "an event was held back until the next one was sent"


def _openai_stream_app(gap_s: float, chunks: int) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(chunks):
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": f"t{index} "}, "finish_reason": None}],
                "sent": time.monotonic(),
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(gap_s)
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


async def test_openai_sdk_streams_through_proxy_token_by_token(aiohttp_server, start_proxy) -> None:
    """The official openai SDK pointed at the proxy gets every chunk of a streamed chat
    completion as the target sends it, with the target's gaps intact."""
    upstream = await aiohttp_server(_openai_stream_app(gap_s=0.2, chunks=6))
    proxy = await start_proxy(str(upstream.make_url("")))
    async with httpx.AsyncClient(trust_env=False) as http:
        client = AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", http_client=http, max_retries=0)
        stream = await client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[tuple[float, float, str]] = []
        async for chunk in stream:
            received.append(
                (time.monotonic(), chunk.model_extra["sent"], chunk.choices[0].delta.content or "")
            )
    assert "".join(text for _, _, text in received) == "t0 t1 t2 t3 t4 t5 "
    for (arrived, _, _), (_, next_sent, _) in itertools.pairwise(received):
        assert arrived < next_sent, "a chunk reached the SDK only after the next was sent"


async def test_two_hundred_concurrent_sse_streams_arrive_intact(aiohttp_server, start_proxy) -> None:
    """200 tools streaming at once each get all their events, in order."""
    upstream = await aiohttp_server(sse_app())
    proxy = await start_proxy(str(upstream.make_url("")))

    async def one(client: aiohttp.ClientSession) -> list[int]:
        got = []
        async with client.get(proxy.url + "/sse?n=10&gap=0.02") as response:
            async for line in response.content:
                if line.startswith(b"data: {"):
                    got.append(json.loads(line[6:])["i"])
        return got

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        results = await asyncio.gather(*(one(client) for _ in range(200)))
    assert all(got == list(range(10)) for got in results)


async def test_client_disconnect_cancels_upstream_stream_within_a_second(aiohttp_server, start_proxy) -> None:
    """Closing the tool (Ctrl+C in a notebook) stops the generation at the target too, so it
    is not billed for tokens nobody reads."""
    seen = Seen()
    upstream = await aiohttp_server(sse_app(seen=seen))
    proxy = await start_proxy(str(upstream.make_url("")))
    async with aiohttp.ClientSession() as client:
        response = await client.get(proxy.url + "/sse?n=1000&gap=0.1")
        await response.content.readline()
        response.close()
    await asyncio.wait_for(seen.disconnected.wait(), timeout=1.0 + 0.5)


async def _dying_target(mode: str) -> asyncio.Server:
    """A raw target that sends part of a body and then closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if mode == "chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"e\r\ndata: partial\n\r\n"
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("mode", ["chunked", "content-length"])
async def test_upstream_dying_mid_stream_gives_client_a_broken_response(mode: str, start_proxy) -> None:
    """If the target dies mid-answer the tool sees an error, never a clean-looking short
    answer it would take for complete."""
    server = await _dying_target(mode)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as client, client.get(proxy.url + "/stream") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("who", ["client", "stop"])
async def test_access_line_says_who_cut_a_stream(
    aiohttp_server, start_proxy, caplog: pytest.LogCaptureFixture, who: str
) -> None:
    """A stream cut short says why in its log line: ``[client went away]`` when the tool hung
    up, ``[cut at stop]`` when TrayProxy stopped and the grace period ran out, so nobody
    blames the tool for the proxy's stop."""
    seen = Seen()
    upstream = await aiohttp_server(sse_app(seen=seen))
    proxy = await start_proxy(str(upstream.make_url("")))
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        async with aiohttp.ClientSession() as client:
            response = await client.get(proxy.url + "/sse?n=1000&gap=0.1")
            await response.content.readline()
            if who == "client":
                response.close()
            else:
                await asyncio.wait_for(proxy.service.stop(grace_s=0.3), 5.0)
            await asyncio.wait_for(seen.disconnected.wait(), 5.0)
            response.close()
        for _ in range(100):
            lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]
            if lines:
                break
            await asyncio.sleep(0.02)
    (line,) = lines
    expected = "[client went away]" if who == "client" else "[cut at stop]"
    assert line.endswith(expected), line
