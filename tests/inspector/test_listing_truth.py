"""The inspector lists each request the proxy received once, with its outcome, and the attempts it
lists are the requests the targets received (issue 15: "Never in the way").

A real ProxyService with routes and a fallback, real aiohttp targets counting what reaches
them, real clients: plain requests, failovers, a retry after a short Retry-After, refusals of a
foreign page, a client that leaves mid-stream and one that leaves while a routed target has not
answered yet. Then the store is read back as a person would read the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from desktop.config.model import ProxySettings, Routing, Secret, Target
from desktop.engine.service import ProxyService
from desktop.inspector.store import Exchange, InspectorStore
from desktop.routing import RouteTable, TargetClaims

SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=1.0)


class Counting:
    """A target that counts what reaches it and answers by the path's last segment."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self.faults: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        await request.read()
        fault = self.faults.pop(0) if self.faults else ""
        if fault == "503":
            return web.json_response({"error": "busy"}, status=503)
        if fault == "429":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        if fault == "hang":
            await asyncio.sleep(5)
        if request.path.endswith("/late-first-event"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)  # the head now, the first event half a second later
            await asyncio.sleep(0.5)
            await response.write(b"data: first\n\n")
            await response.write_eof()
            return response
        if request.path.endswith("/stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for number in range(50):
                await response.write(f"data: {number}\n\n".encode())
                await asyncio.sleep(0.02)
            await response.write_eof()
            return response
        return web.json_response({"target": self.name})


async def start_target(aiohttp_server: Any, counting: Counting) -> Target:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", counting.handle)
    server = await aiohttp_server(app)
    return Target(
        url=str(server.make_url("")),
        name=counting.name,
        add_headers=(("Authorization", Secret(f"Bearer key-of-{counting.name}")),),
        read_timeout_s=10.0,
    )


def attempts_of(exchange: Exchange) -> list[str]:
    """The targets an exchange's row says were asked, one entry per request sent."""
    end = exchange.end
    assert end is not None
    if end.attempts:
        return [attempt.split()[0] for attempt in end.attempts]
    return [end.target] if end.target else []


async def test_each_request_is_listed_once_and_the_attempts_are_what_the_targets_received(
    aiohttp_server: Any,
) -> None:
    main, flaky, spare = Counting("main"), Counting("flaky"), Counting("spare")
    targets = {c.name: await start_target(aiohttp_server, c) for c in (main, flaky, spare)}
    table = RouteTable.build(
        [
            TargetClaims("flaky", prefixes=("/f",), fallbacks=("spare",)),
            TargetClaims("main"),
            TargetClaims("spare"),
        ],
        default="main",
    )
    store = InspectorStore()
    service = ProxyService(
        SETTINGS,
        targets["main"],
        routing=Routing(table, (targets["flaky"], targets["spare"]), cooldown_s=0.0),
        tap=store,
    )
    await service.start()
    base = f"http://127.0.0.1:{service.port}"
    flaky.faults = ["503", "503", "429", "", "hang"]
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str, **kwargs: Any) -> int:
                async with session.get(base + path, **kwargs) as response:
                    await response.read()
                    return response.status

            async def leave_mid_stream() -> None:
                async with session.get(base + "/v1/stream") as response:
                    await response.content.readline()  # the first event, then the client goes

            async def leave_while_waiting(path: str = "/f/v1/slow") -> None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await get(path)

            # In order, so the faults meet the requests they are meant for.
            assert await get("/v1/a") == 200
            assert await get("/f/v1/b") == 200  # flaky 503 -> spare
            assert await get("/f/v1/c") == 200  # flaky 503 -> spare
            assert await get("/f/v1/d") == 200  # flaky 429 (Retry-After: 0), asked again -> flaky 200
            assert await get("/f/v1/e", headers={"Origin": "https://evil.example"}) == 403
            await leave_mid_stream()
            await leave_while_waiting()  # flaky holds its answer; the client gives up at 0.5 s
            assert await get("/v1/f") == 200
            # The fallback holds its answer after the first target failed; the client gives up.
            flaky.faults, spare.faults = ["503"], ["hang"]
            await leave_while_waiting("/f/v1/slow2")
        # Everything ended (the target of the abandoned request may still be sleeping).
        for _ in range(500):  # 5 s at most
            if all(exchange.done for exchange in store.exchanges()):
                break
            await asyncio.sleep(0.01)
    finally:
        await service.stop(grace_s=0.2)

    listed = store.exchanges()
    paths = Counter(exchange.head.raw_path for exchange in listed)
    assert paths == Counter(
        [
            "/v1/a",
            "/f/v1/b",
            "/f/v1/c",
            "/f/v1/d",
            "/f/v1/e",
            "/v1/stream",
            "/f/v1/slow",
            "/v1/f",
            "/f/v1/slow2",
        ]
    )
    outcomes = {exchange.head.raw_path: exchange.end.note for exchange in listed if exchange.end}
    assert outcomes["/v1/stream"] == "client went away"
    assert outcomes["/f/v1/slow"] == "client went away"
    assert outcomes["/f/v1/slow2"] == "client went away"
    assert outcomes["/f/v1/e"] == "origin_not_allowed"
    asked = Counter(name for exchange in listed for name in attempts_of(exchange))
    assert asked == Counter(main=main.received, flaky=flaky.received, spare=spare.received)


async def test_time_to_first_byte_is_the_head_even_when_failover_waits_for_the_first_event(
    aiohttp_server: Any,
) -> None:
    """A target with a fallback is read up to its first event before the client gets anything
    (an error event fails over); the row's TTFB is still when its head came, not that event."""
    flaky, spare = Counting("flaky"), Counting("spare")
    targets = {c.name: await start_target(aiohttp_server, c) for c in (flaky, spare)}
    table = RouteTable.build(
        [TargetClaims("flaky", fallbacks=("spare",)), TargetClaims("spare")], default="flaky"
    )
    store = InspectorStore()
    service = ProxyService(SETTINGS, targets["flaky"], routing=Routing(table, (targets["spare"],)), tap=store)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{service.port}/v1/late-first-event", json={}
        ) as response:
            assert await response.read() == b"data: first\n\n"
    finally:
        await service.stop(grace_s=0.2)
    (exchange,) = store.exchanges()
    assert exchange.response_at is not None
    assert exchange.response_at - exchange.head.started < 0.25  # not the 500 ms to the event
    assert exchange.chunk_times[0] - exchange.head.started >= 0.5


async def test_a_request_body_streamed_to_the_target_is_kept_too(aiohttp_server: Any) -> None:
    """Bodies over 1 MiB and chunked ones go to the target as they arrive; the inspector keeps
    them all the same (long agent prompts are what people want to read), cut at the cap."""
    main = Counting("main")
    target = await start_target(aiohttp_server, main)
    store = InspectorStore(request_cap_bytes=4 * 1024 * 1024)
    service = ProxyService(SETTINGS, target, tap=store)
    await service.start()
    large = b'{"model": "m", "prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    huge = b"y" * (5 * 1024 * 1024)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"model": "llama3", '
        yield b'"prompt": "hi"}'

    try:
        base = f"http://127.0.0.1:{service.port}"
        async with aiohttp.ClientSession() as session:
            for path, data in (
                ("/v1/large", io.BytesIO(large)),
                ("/v1/chunked", chunked()),
                ("/v1/huge", io.BytesIO(huge)),
            ):
                async with session.post(base + path, data=data) as response:
                    assert response.status == 200
    finally:
        await service.stop(grace_s=0.2)
    kept = {e.head.raw_path: (e.request_body, e.request_body_cut) for e in store.exchanges()}
    assert kept["/v1/large"] == (large, False)
    assert kept["/v1/chunked"] == (b'{"model": "llama3", "prompt": "hi"}', False)
    body, cut = kept["/v1/huge"]
    assert cut
    assert body is not None
    assert 3 * 1024 * 1024 < len(body) <= 4 * 1024 * 1024
    assert huge.startswith(body)
