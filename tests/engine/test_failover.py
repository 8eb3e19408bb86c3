"""Routes and failover in the engine: a ProxyService given a Routing, real targets, real clients.

What a person notices: one port sends ``/anthropic/...`` and ``claude-*`` to one service and the
rest to the chosen one, each with its own key; a model renamed for a gateway arrives renamed with
a matching Content-Length; a redirect from a prefix target keeps the prefix; a target that fails
before sending anything is replaced by its fallback without the tool seeing a thing, and one that
fails mid-stream is not hidden; when all fail, the tool gets the last real answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from desktop.config.model import ProxySettings, Routing, Secret, Target
from desktop.engine import answers
from desktop.engine.answers import retry_after_s
from desktop.engine.failover import FailoverEvent
from desktop.engine.service import ProxyService
from desktop.routing import RouteTable, TargetClaims

WAIT_S = 10.0
SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=1.0)


@dataclass
class Scripted:
    """A target: each request takes the next fault from ``faults`` (then answers normally) and
    is recorded as (path with query, headers, body)."""

    name: str
    faults: list[str] = field(default_factory=list)
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    target: Target | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.path_qs, dict(request.headers), body))
        if request.headers.get("Upgrade", "").lower() == "websocket" and not self.faults:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(f"{self.name} {request.path_qs}")
            await ws.close()
            return ws
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault.isdigit():
            headers = {"Retry-After": "30"} if fault == "429" else {}
            return web.json_response(
                {"error": {"message": f"{self.name} says {fault}"}}, status=int(fault), headers=headers
            )
        if fault.startswith("429 after "):
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": fault.split()[-1]}
            )
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if fault == "hang":
            await asyncio.sleep(5)
        if fault == "empty":
            return web.Response(status=200, body=b"", content_type="application/json")
        if fault == "done":  # Ollama's delete and copy: 200, no body, no Content-Type
            response = web.Response(status=200)
            response.headers.popall("Content-Type", None)
            return response
        if fault == "redirect":
            raise web.HTTPFound("/v1/elsewhere")
        if fault == "drip":  # an event begun, never finished in time
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: par")
            await asyncio.sleep(2.5)  # within the target's read timeout (the test sets 5 s)
            await response.write(b"tial\n\n")
            await response.write_eof()
            return response
        if fault == "late error":  # a comment when headers go, the error event a while later
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await asyncio.sleep(0.6)
            await response.write(b": PROCESSING\n\n")
            await asyncio.sleep(0.3)
            await response.write(b"event: error\ndata: {}\n\n")
            await response.write_eof()
            return response
        if fault == "comments":  # many keep-alive comments before the first event
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for _ in range(3000):
                await response.write(b": .\n\n")
            await response.write(b"data: done\n\n")
            await response.write_eof()
            return response
        if fault in ("sse", "sse error", "sse null error", "cut"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            if fault == "sse null error":
                await response.write(b'data: {"error": null, "id": "ok"}\n\n')
                await response.write_eof()
                return response
            if fault == "sse error":
                await response.write(
                    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'
                )
                await response.write_eof()
                return response
            for number in range(60):
                if fault == "cut" and number == 40:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(f"data: {self.name} {number}\n\n".encode())
            await response.write_eof()
            return response
        return web.json_response({"target": self.name, "path": request.path_qs})


@pytest.fixture
async def targets(aiohttp_server: Any) -> dict[str, Scripted]:
    made = {}
    for name in ("main", "anthropic", "openrouter"):
        scripted = Scripted(name)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", scripted.handle)
        server = await aiohttp_server(app)
        scripted.target = Target(
            url=str(server.make_url("")),
            name=name,
            add_headers=(("Authorization", Secret(f"Bearer key-of-{name}")),),
            read_timeout_s=1.0,
        )
        made[name] = scripted
    return made


def routing_for(targets: dict[str, Scripted], *claims: TargetClaims, **options: Any) -> Routing:
    named = {claim.name for claim in claims}
    table = RouteTable.build([*claims, *(TargetClaims(n) for n in targets if n not in named)], default="main")
    others = tuple(t.target for n, t in targets.items() if n != "main" and t.target is not None)
    return Routing(table, others, **options)


@pytest.fixture
async def serve(targets: dict[str, Scripted]) -> AsyncIterator[Callable[..., Any]]:
    services: list[ProxyService] = []

    async def start(routing: Routing, events: list[FailoverEvent] | None = None) -> ProxyService:
        main = targets["main"].target
        assert main is not None
        service = ProxyService(
            SETTINGS, main, routing=routing, on_failover=(events.append if events is not None else None)
        )
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop(grace_s=0.2)


CLAIMS = (
    TargetClaims(
        "anthropic",
        prefixes=("/anthropic",),
        models=("claude-*",),
        model_map={"claude-x": "claude-x-latest"},
        fallbacks=("openrouter",),
    ),
    TargetClaims("openrouter", prefixes=("/defm",), model_map={"claude-x": "anthropic/claude-x"}),
)


async def post(port: int, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{path}", json=payload) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_prefix_model_and_default_routes_each_reach_their_target_with_its_own_key(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    service = await serve(routing_for(targets, *CLAIMS))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{service.port}/defm/v1/models?limit=5") as r:
            assert (await r.json())["target"] == "openrouter"
        async with session.get(f"http://127.0.0.1:{service.port}/anthropical/v1/models") as r:
            assert (await r.json())["target"] == "main"  # whole segments only
    status, _, body = await post(service.port, "/v1/messages", {"model": "claude-x", "max_tokens": 5})
    assert status == 200
    assert json.loads(body)["target"] == "anthropic"
    status, _, body = await post(service.port, "/v1/chat/completions", {"model": "gpt-4o"})
    assert json.loads(body)["target"] == "main"
    assert targets["openrouter"].seen[0][0] == "/v1/models?limit=5"
    path, headers, sent = targets["anthropic"].seen[0]
    assert path == "/v1/messages"
    assert headers["Authorization"] == "Bearer key-of-anthropic"
    assert json.loads(sent) == {"model": "claude-x-latest", "max_tokens": 5}
    assert int(headers["Content-Length"]) == len(sent)
    assert targets["main"].seen[-1][1]["Authorization"] == "Bearer key-of-main"


async def test_a_redirect_from_a_prefix_target_keeps_the_prefix(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    targets["openrouter"].faults.append("redirect")
    service = await serve(routing_for(targets, *CLAIMS))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{service.port}/defm/v1/x", allow_redirects=False) as r,
    ):
        assert r.status == 302
        assert r.headers["Location"] == "/defm/v1/elsewhere"


@pytest.mark.parametrize("fault", ["503", "529", "429", "reset", "hang", "sse error", "empty", "500"])
async def test_a_failure_before_the_first_byte_is_served_by_the_fallback(
    targets: dict[str, Scripted], serve: Callable[..., Any], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    targets["anthropic"].faults.append(fault)
    events: list[FailoverEvent] = []
    service = await serve(routing_for(targets, *CLAIMS), events)
    caplog.set_level(logging.INFO, "trayproxy.access")
    status, _, body = await post(service.port, "/anthropic/v1/messages", {"model": "claude-x"})
    assert status == 200, body
    assert json.loads(body)["target"] == "openrouter"
    # The fallback got its own key and its own rename.
    _, sent_headers, sent = targets["openrouter"].seen[0]
    assert sent_headers["Authorization"] == "Bearer key-of-openrouter"
    assert json.loads(sent)["model"] == "anthropic/claude-x"
    assert [(e.failed, e.next) for e in events] == [("anthropic", "openrouter")]
    line = next(r.getMessage() for r in caplog.records if r.name == "trayproxy.access")
    assert "via prefix:/anthropic -> anthropic " in line, line
    assert ", openrouter 200 " in line, line


async def test_a_stream_cut_after_its_first_byte_is_not_retried_and_ends_broken(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    targets["anthropic"].faults.append("cut")
    service = await serve(routing_for(targets, *CLAIMS))
    got: list[bytes] = []

    async def read_all() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{service.port}/anthropic/v1/messages", json={}) as r,
        ):
            got.append(str(r.status).encode())
            async for chunk in r.content.iter_any():
                got.append(chunk)  # one by one: the stream breaks mid-way

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all()
    assert got[0] == b"200"
    got = [b"".join(got)]
    assert b"anthropic 39" in got[0]
    assert b"anthropic 40" not in got[0]
    assert targets["openrouter"].seen == []


async def test_a_short_retry_after_asks_the_same_target_again(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    targets["anthropic"].faults.append("429 after 1")
    service = await serve(routing_for(targets, *CLAIMS))
    started = asyncio.get_running_loop().time()
    status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 200
    assert json.loads(body)["target"] == "anthropic"
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert len(targets["anthropic"].seen) == 2
    assert targets["openrouter"].seen == []


async def test_when_every_target_fails_the_client_gets_the_last_answer_unchanged(
    targets: dict[str, Scripted], serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    targets["anthropic"].faults.append("503")
    targets["openrouter"].faults.append("429")
    service = await serve(routing_for(targets, *CLAIMS))
    status, headers, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 429
    assert headers["Retry-After"] == "30"
    assert json.loads(body) == {"error": {"message": "openrouter says 429"}}
    # The last target could not be reached at all: the earlier answer is given, as it was.
    targets["anthropic"].faults.append("503")
    targets["openrouter"].faults.append("hang")
    status, headers, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 503
    assert json.loads(body) == {"error": {"message": "anthropic says 503"}}


async def test_a_target_that_keeps_failing_is_tried_last_for_its_cooldown(
    targets: dict[str, Scripted], serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    targets["anthropic"].faults.extend(["503", "503"])
    events: list[FailoverEvent] = []
    service = await serve(routing_for(targets, *CLAIMS, failures_for_cooldown=2, cooldown_s=30.0), events)
    for _ in range(2):
        status, _, _ = await post(service.port, "/anthropic/v1/messages", {})
        assert status == 200
    assert [name for name, _ in events[-1].cooling] == ["anthropic"]
    before = len(targets["anthropic"].seen)
    with caplog.at_level(logging.INFO, "trayproxy.access"):
        status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert json.loads(body)["target"] == "openrouter"
    line = next(r.getMessage() for r in caplog.records if r.name == "trayproxy.access")
    assert "via prefix:/anthropic (anthropic tried last) -> openrouter 200 " in line
    assert len(targets["anthropic"].seen) == before  # not asked first while cooling


async def test_a_refused_websocket_upgrade_goes_to_the_fallback_and_prefix_and_query_route_it(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    table_claims = (
        TargetClaims("anthropic", prefixes=("/anthropic",), fallbacks=("openrouter",)),
        TargetClaims("openrouter", models=("gpt-realtime*",)),
    )
    service = await serve(routing_for(targets, *table_claims))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"http://127.0.0.1:{service.port}/v1/realtime?model=gpt-realtime-mini"
        ) as ws:
            assert (await ws.receive_str()) == "openrouter /v1/realtime?model=gpt-realtime-mini"
        targets["anthropic"].faults.append("503")
        async with session.ws_connect(f"http://127.0.0.1:{service.port}/anthropic/ws") as ws:
            assert (await ws.receive_str()) == "openrouter /ws"


async def test_a_streamed_body_is_sent_once(targets: dict[str, Scripted], serve: Callable[..., Any]) -> None:
    targets["anthropic"].faults.append("503")
    service = await serve(routing_for(targets, *CLAIMS))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": '
        yield b'"claude-x"}'

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{service.port}/anthropic/v1/messages", data=chunks()) as r,
    ):
        assert r.status == 503
    assert targets["openrouter"].seen == []


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 5) == 5.0
    # asctime's form has no zone: HTTP dates are GMT.
    assert retry_after_s("Wed Oct 21 07:28:00 2015", now=1445412480.0 - 3) == 3.0
    assert retry_after_s("²") is None
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
    assert retry_after_s("-1") is None


async def test_a_stream_from_a_target_with_fallbacks_arrives_whole_and_in_order(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    targets["anthropic"].faults.append("sse")
    service = await serve(routing_for(targets, *CLAIMS))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{service.port}/anthropic/v1/messages", json={}) as r,
    ):
        text = (await r.read()).decode()
    assert text == "".join(f"data: anthropic {number}\n\n" for number in range(60))


async def test_without_a_fallback_a_routed_target_answers_as_it_would_without_routes(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """No second try, no wait for Retry-After: the 429 reaches the tool at once."""
    targets["openrouter"].faults.append("429 after 1")
    service = await serve(routing_for(targets, *CLAIMS))
    started = asyncio.get_running_loop().time()
    status, headers, _ = await post(service.port, "/defm/v1/chat/completions", {})
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert asyncio.get_running_loop().time() - started < 0.9
    assert len(targets["openrouter"].seen) == 1


async def test_with_cooldown_zero_a_failing_target_is_always_asked_first(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    targets["anthropic"].faults.extend(["503"] * 4)
    events: list[FailoverEvent] = []
    service = await serve(routing_for(targets, *CLAIMS, failures_for_cooldown=2, cooldown_s=0.0), events)
    for _ in range(4):
        status, _, _ = await post(service.port, "/anthropic/v1/messages", {})
        assert status == 200
    assert len(targets["anthropic"].seen) == 4
    assert all(event.cooling == () for event in events)


async def test_an_event_whose_error_member_is_null_is_an_answer(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """Some servers send "error": null in every chunk of a good stream: no failover."""
    targets["anthropic"].faults.append("sse null error")
    service = await serve(routing_for(targets, *CLAIMS))
    status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 200
    assert body == b'data: {"error": null, "id": "ok"}\n\n'
    assert targets["openrouter"].seen == []


async def test_a_fallback_is_said_to_take_over_only_when_it_served_the_request(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """The tray's notification comes from this event: 'openrouter took over' must not be said
    of a fallback that failed too."""
    targets["anthropic"].faults.append("503")
    targets["openrouter"].faults.append("503")
    events: list[FailoverEvent] = []
    service = await serve(routing_for(targets, *CLAIMS), events)
    status, _, _ = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 503
    assert [(e.failed, e.cause, e.next) for e in events] == [("anthropic", "503", None)]
    status, _, _ = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 200
    assert len(events) == 1  # served by the target asked first: nothing to tell


async def test_a_request_waiting_when_the_target_is_switched_falls_back_where_it_began(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """main hangs, its fallback is openrouter; the tray switches to anthropic meanwhile (whose
    routes have no openrouter). The waiting request still goes to openrouter, with openrouter's
    key, never to the new target."""
    targets["main"].faults.append("hang")
    service = await serve(routing_for(targets, TargetClaims("main", fallbacks=("openrouter",))))
    waiting = asyncio.ensure_future(post(service.port, "/v1/chat/completions", {"model": "x"}))
    await asyncio.sleep(0.3)  # the request is with main now
    anthropic, main = targets["anthropic"].target, targets["main"].target
    assert anthropic is not None
    assert main is not None
    service.set_target(anthropic)
    service.set_routing(
        Routing(
            RouteTable.build([TargetClaims("anthropic"), TargetClaims("main")], default="anthropic"), (main,)
        )
    )
    status, _, body = await asyncio.wait_for(waiting, WAIT_S)
    assert status == 200
    assert json.loads(body)["target"] == "openrouter"
    assert targets["openrouter"].seen[0][1]["Authorization"] == "Bearer key-of-openrouter"
    assert targets["anthropic"].seen == []


async def test_an_empty_200_without_a_content_type_is_an_answer(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """Ollama answers a delete or a copy with 200 and nothing else: done, not failed; the
    fallback is never asked to do it again."""
    targets["anthropic"].faults.append("done")
    service = await serve(routing_for(targets, *CLAIMS))
    async with (
        aiohttp.ClientSession() as session,
        session.delete(f"http://127.0.0.1:{service.port}/anthropic/api/delete", json={"model": "x"}) as r,
    ):
        assert r.status == 200
    targets["anthropic"].faults.append("done")
    status, _, body = await post(service.port, "/anthropic/api/copy", {"source": "a", "destination": "b"})
    assert status == 200
    assert body == b""
    assert targets["openrouter"].seen == []


async def test_a_first_event_that_drips_is_passed_on_after_a_bounded_wait(
    targets: dict[str, Scripted], serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for the first whole event is bounded as a whole, not per byte: the tool gets the
    answer's status and first bytes after it, and the fallback is not asked."""
    monkeypatch.setattr(answers, "FIRST_EVENT_WAIT_S", 0.2)
    targets["anthropic"].faults.append("drip")
    slow = targets["anthropic"].target
    assert slow is not None
    targets["anthropic"].target = replace(slow, read_timeout_s=5.0)
    service = await serve(routing_for(targets, *CLAIMS))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{service.port}/anthropic/v1/messages", json={}) as r,
    ):
        assert r.status == 200
        assert await r.content.readexactly(9) == b"data: par"
        assert loop.time() - started < 1.5  # not held until the event ends (2.5 s)
        assert await r.read() == b"tial\n\n"
    assert targets["openrouter"].seen == []


async def test_a_switch_while_the_body_arrives_sends_it_by_the_routes_of_when_it_is_in(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """The routes are read once the body is in, together with the pools: a switch to a target
    without routes meanwhile sends the request there as a request without routes goes (path and
    body as sent), never down the old routes with the new target's key."""
    service = await serve(routing_for(targets, *CLAIMS))
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"model": "claude-x", '
        await gate.wait()
        yield b'"max_tokens": 5}'

    length = len(b'{"model": "claude-x", "max_tokens": 5}')
    async with aiohttp.ClientSession() as session:
        sending = asyncio.ensure_future(
            session.post(
                f"http://127.0.0.1:{service.port}/v1/messages",
                data=slow_body(),
                headers={"Content-Length": str(length), "Content-Type": "application/json"},
            )
        )
        await asyncio.sleep(0.3)  # the head and the first bytes are in
        openrouter = targets["openrouter"].target
        assert openrouter is not None
        service.set_target(openrouter)
        service.set_routing(None)
        gate.set()
        response = await asyncio.wait_for(sending, WAIT_S)
        assert response.status == 200
        assert (await response.json())["target"] == "openrouter"
        response.release()
    _, headers, sent = targets["openrouter"].seen[0]
    assert headers["Authorization"] == "Bearer key-of-openrouter"
    assert json.loads(sent) == {"model": "claude-x", "max_tokens": 5}  # not renamed for another target
    assert targets["anthropic"].seen == []


async def test_the_first_event_bound_counts_from_the_first_bytes_not_the_headers(
    targets: dict[str, Scripted], serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers at once, a comment after 0.6 s, the error event 0.3 s later: with a 0.5 s bound
    from the first bytes the error is seen and the fallback answers."""
    monkeypatch.setattr(answers, "FIRST_EVENT_WAIT_S", 0.5)
    targets["anthropic"].faults.append("late error")
    service = await serve(routing_for(targets, *CLAIMS))
    status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 200
    assert json.loads(body)["target"] == "openrouter"


async def test_keep_alive_comments_before_the_first_event_reach_the_tool_whole(
    targets: dict[str, Scripted], serve: Callable[..., Any]
) -> None:
    """3000 comments (18 KB) before the first event, looked at while the event is awaited:
    every byte reaches the tool, in order, and the fallback is not asked."""
    targets["anthropic"].faults.append("comments")
    service = await serve(routing_for(targets, *CLAIMS))
    status, _, body = await post(service.port, "/anthropic/v1/messages", {})
    assert status == 200
    assert body == b": .\n\n" * 3000 + b"data: done\n\n"
    assert targets["openrouter"].seen == []
