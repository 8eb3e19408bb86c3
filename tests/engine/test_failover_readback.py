"""Issue 14 read-back: failover defects shown with real targets and a real ProxyService.

Each test states what a person would notice; each failed on main as of 20887ae (the read-back
landed them as strict xfails naming the line at fault) and passes since the mending commit.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_failover import CLAIMS, SETTINGS, Scripted, post, routing_for, serve, targets

from desktop.config.model import Routing
from desktop.engine.condition import TargetCondition
from desktop.engine.failover import FailoverEvent
from desktop.engine.service import ProxyService
from desktop.routing import RouteTable, TargetClaims

__all__ = ["serve", "targets"]  # fixtures, imported for pytest


async def _serve_with(
    targets: dict[str, Scripted], routing: Any, conditions: list[TargetCondition]
) -> AsyncIterator[ProxyService]:
    main = targets["main"].target
    assert main is not None
    service = ProxyService(SETTINGS, main, routing=routing, on_condition=conditions.append)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace_s=0.2)


async def test_a_gzip_event_stream_from_a_target_with_a_fallback_still_streams(
    targets: dict[str, Scripted], serve: Callable[..., Any], aiohttp_server: Any
) -> None:
    """A target that gzips its SSE (nginx/Cloudflare in front of a gateway do) sends the first
    event at once and the rest 1.5 s later: the tool must see the first event before the end.
    failover._first_bytes (now answers.first_bytes) looked for b"\\n\\n" in the *compressed* bytes, finds none, and reads
    on to 64 KiB or the end, so the whole answer arrives at once."""

    async def gzip_sse(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )
        await response.prepare(request)
        packer = zlib.compressobj(wbits=31)
        await response.write(
            packer.compress(b"event: message_start\ndata: {}\n\n") + packer.flush(zlib.Z_SYNC_FLUSH)
        )
        await asyncio.sleep(1.5)
        await response.write(packer.compress(b"event: message_stop\ndata: {}\n\n") + packer.flush())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", gzip_sse)
    server = await aiohttp_server(app)
    anthropic = targets["anthropic"]
    assert anthropic.target is not None
    anthropic.target = replace(anthropic.target, url=str(server.make_url("")), read_timeout_s=5.0)
    service = await serve(routing_for(targets, *CLAIMS))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(f"http://127.0.0.1:{service.port}/anthropic/v1/messages", json={}) as r,
    ):
        assert r.status == 200
        await r.content.readany()
        first_after = loop.time() - started
        await r.read()
    assert first_after < 1.0, f"first event reached the tool after {first_after:.2f} s, with the last one"


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("POST", 202)])
async def test_an_empty_answer_that_is_not_an_empty_200_to_a_request_for_content_is_not_a_failure(
    targets: dict[str, Scripted], serve: Callable[..., Any], aiohttp_server: Any, method: str, status: int
) -> None:
    """Issue 14 fails over on an *empty 200* (a chat answer with nothing in it). failover.py
    treats every empty 2xx to every method but HEAD as a failure: a CORS preflight's empty 200,
    or a 202 Accepted (the first target took the request), is sent again to the fallback and
    counted against the target (3 in a row: cool-down, tray notice 'gave an empty answer')."""
    anthropic = targets["anthropic"]
    seen: list[str] = []

    async def empty(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(request.method)
        return web.Response(status=status, body=b"")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", empty)
    server = await aiohttp_server(app)
    assert anthropic.target is not None
    anthropic.target = replace(anthropic.target, url=str(server.make_url("")))
    events: list[FailoverEvent] = []
    service = await serve(routing_for(targets, *CLAIMS), events)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://127.0.0.1:{service.port}/anthropic/v1/messages/batches", json={}
        ) as r,
    ):
        assert r.status == status
    assert seen == [method]
    assert targets["openrouter"].seen == [], "the request was sent again to the fallback"
    assert events == []


async def test_when_all_fail_the_condition_is_not_pinned_on_a_target_that_did_not_give_the_answer(
    targets: dict[str, Scripted],
) -> None:
    """anthropic answers 429 (Retry-After 30), its fallback openrouter cannot be reached: the tool
    gets anthropic's 429, and the log/status must not say openrouter is rate limiting.
    service._dispatch_routed notes the condition for the last upstream used with the record of
    the answer given (anthropic's kept 429)."""
    targets["anthropic"].faults.append("429")
    targets["openrouter"].faults.append("reset")
    conditions: list[TargetCondition] = []
    async for service in _serve_with(targets, routing_for(targets, *CLAIMS), conditions):
        status, _, body = await post(service.port, "/anthropic/v1/messages", {})
        assert status == 429, body
    pinned = [(c.target_name, c.kind) for c in conditions]
    assert ("openrouter", "rate_limited") not in pinned, pinned


async def test_a_retry_after_of_unusual_digits_does_not_crash_the_request(
    targets: dict[str, Scripted], serve: Callable[..., Any], aiohttp_server: Any
) -> None:
    """'²'.isdigit() is True but float('²') raises: retry_after_s lets the ValueError out of
    forward_routed, the tool gets aiohttp's bare 500 instead of the target's 429 (or the
    fallback's 200), and the target's response is never released."""

    async def odd(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "\u00b2"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", odd)
    server = await aiohttp_server(app)
    anthropic = targets["anthropic"]
    assert anthropic.target is not None
    anthropic.target = replace(anthropic.target, url=str(server.make_url("")))
    service = await serve(routing_for(targets, *CLAIMS))
    status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status in (200, 429), (status, body)


async def test_a_request_in_flight_keeps_its_fallback_when_the_routes_change(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """set_routing says requests already open finish where they are; but upstream_for looks a
    name up at each attempt, and a fallback dropped meanwhile resolves to the listener's own
    target. anthropic answers 429 (Retry-After 1) then 503; during the wait the routes change
    so openrouter is no longer reachable: the fallback attempt goes to 'main', which this request
    was never routed to (with openrouter's renamed model)."""
    targets["anthropic"].faults.extend(["429 after 1", "503"])
    service = await serve(routing_for(targets, *CLAIMS))
    request = asyncio.ensure_future(post(service.port, "/anthropic/v1/messages", {"model": "claude-x"}))
    await asyncio.sleep(0.4)
    assert len(targets["anthropic"].seen) == 1
    only_anthropic = RouteTable.build(
        [
            TargetClaims("main"),
            TargetClaims("anthropic", prefixes=("/anthropic",)),
            TargetClaims("openrouter"),
        ],
        default="main",
    )
    assert targets["anthropic"].target is not None
    service.set_routing(Routing(only_anthropic, (targets["anthropic"].target,)))
    await request
    assert targets["main"].seen == [], f"main got {targets['main'].seen[0][0]} meant for openrouter"
