"""The recording behind a real TrayProxy (ProxyService) in front of a real target on 127.0.0.1:
what a client reads from a replay, and identical requests at once sent to the target once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from desktop.cache import Recordings
from desktop.config.model import ProxySettings, Target
from desktop.engine.accesslog import ACCESS_LOGGER
from desktop.engine.capture import ExchangeEnd, RequestHead
from desktop.engine.service import ProxyService

SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=1.0)
EVENTS = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b'data: {"n": 3}\n\n', b"data: [DONE]\n\n"]
BODY = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


class SlowStream:
    """A target answering an SSE stream, an event every ``gap_s``, counting requests."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.seen = 0
        self.done_at = 0.0  # loop time the last answer ended

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Answer": str(self.seen)}
        )
        await response.prepare(request)
        for event in EVENTS:
            await asyncio.sleep(self.gap_s)
            await response.write(event)
        await response.write_eof()
        self.done_at = asyncio.get_running_loop().time()
        return response


@pytest.fixture
async def proxy(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[ProxyService, Recordings]] = []

    async def start(mode: str, gap_s: float = 0.0) -> tuple[int, SlowStream]:
        target = SlowStream(gap_s)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", target.handle)
        server = await aiohttp_server(app)
        recordings = Recordings(tmp_path / "answers.sqlite3")
        service = ProxyService(
            SETTINGS, Target(url=str(server.make_url("")), name="main", cache=mode), recall=recordings
        )
        await service.start()
        made.append((service, recordings))
        return service.port, target

    yield start
    for service, recordings in made:
        await service.stop(grace_s=0.2)
        recordings.close()


async def read_chunks(port: int, first_at: list[float] | None = None) -> tuple[str, list[bytes]]:
    """The X-Answer header and the body as the HTTP chunks the client received (the loop time
    the first came appended to ``first_at``)."""
    loop = asyncio.get_running_loop()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/chat/completions", data=BODY) as response,
    ):
        assert response.status == 200
        chunks = []
        async for chunk, _ in response.content.iter_chunks():
            if chunk and not chunks and first_at is not None:
                first_at.append(loop.time())
            if chunk:
                chunks.append(chunk)
        return response.headers["X-Answer"], chunks


async def test_a_replayed_stream_comes_in_the_same_chunks_with_the_targets_headers(
    proxy: Callable[..., Any],
) -> None:
    port, target = await proxy("replay", gap_s=0.02)
    first = await read_chunks(port)
    again = await read_chunks(port)
    assert target.seen == 1
    assert first == again == ("1", EVENTS)


async def test_identical_requests_at_once_reach_the_target_once_and_all_get_the_answer(
    proxy: Callable[..., Any],
) -> None:
    """Five identical streamed requests at once in replay: one goes out, the other four
    follow it as it arrives (each event as it comes, not after the end)."""
    port, target = await proxy("replay", gap_s=0.1)
    first_at: list[float] = []
    answers = await asyncio.gather(*(read_chunks(port, first_at) for _ in range(5)))
    assert target.seen == 1
    assert all(got == ("1", EVENTS) for got in answers)
    assert len(first_at) == 5
    assert max(first_at) < target.done_at, "every client had its first event before the answer ended"


async def test_record_sends_every_identical_request(proxy: Callable[..., Any]) -> None:
    port, target = await proxy("record", gap_s=0.02)
    answers = await asyncio.gather(*(read_chunks(port) for _ in range(3)))
    assert target.seen == 3
    assert sorted(header for header, _ in answers) == ["1", "2", "3"]


async def test_a_request_whose_header_the_answer_varies_on_does_not_follow_another_value(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Two requests at once, alike but for X-Tenant, which the answer's Vary names: each gets
    the answer to its own value (the second must not follow the first's answer)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        tenant = request.headers.get("X-Tenant", "")
        seen.append(tenant)
        await asyncio.sleep(0.2)  # the second arrives while the first waits for its head
        return web.Response(text=f"for {tenant}", headers={"Vary": "X-Tenant"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    recordings = Recordings(tmp_path / "answers.sqlite3")
    service = ProxyService(
        SETTINGS, Target(url=str(server.make_url("")), name="main", cache="replay"), recall=recordings
    )
    await service.start()
    try:

        async def ask(tenant: str) -> str:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{service.port}/v1/chat/completions",
                    data=BODY,
                    headers={"X-Tenant": tenant},
                ) as response,
            ):
                return await response.text()

        first = asyncio.create_task(ask("a"))
        await asyncio.sleep(0.05)
        assert await asyncio.gather(first, ask("b")) == ["for a", "for b"]
        assert sorted(seen) == ["a", "b"]
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()


class _Unheeding:
    """A capture that takes every call but the end and does nothing with it."""

    def request_body(self, body: bytes) -> None: ...
    def request_piece(self, piece: bytes) -> None: ...
    def response(self, status: int, reason: str, headers: Any, at: float) -> None: ...
    def chunk(self, data: bytes, at: float) -> None: ...
    def message(self, to_target: bool, size: int, at: float) -> None: ...


class _BrokenEnd(_Unheeding):
    """An inspector's capture whose end fails (a bug there must not strand a recording)."""

    def end(self, end: ExchangeEnd) -> None:
        raise RuntimeError("the inspector failed")


class _BrokenTap:
    def begin(self, head: RequestHead) -> _BrokenEnd:
        return _BrokenEnd()


async def test_a_repeat_is_answered_even_when_the_inspector_fails_at_the_first_ones_end(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The recorder is told of the end after the inspector's capture: when that one raises,
    the recorder must still end, or the repeat follows an answer that never ends (it hung)."""
    target = SlowStream(0.02)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    server = await aiohttp_server(app)
    recordings = Recordings(tmp_path / "answers.sqlite3")
    service = ProxyService(
        SETTINGS,
        Target(url=str(server.make_url("")), name="main", cache="replay"),
        recall=recordings,
        tap=_BrokenTap(),
    )
    await service.start()
    try:
        assert await read_chunks(service.port) == ("1", EVENTS)
        assert await asyncio.wait_for(read_chunks(service.port), 5.0) == ("1", EVENTS)
        assert target.seen == 1
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()


async def test_a_fallbacks_answer_is_not_kept_as_the_first_targets(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """main fails (503) and its fallback answers: the client gets the fallback's answer, but a
    repeat once main is back asks main, never the fallback's answer replayed as main's."""
    from desktop.config.model import Routing
    from desktop.routing import RouteTable, TargetClaims

    seen: dict[str, int] = {"main": 0, "spare": 0}
    failing = [True]

    def handler(name: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            seen[name] += 1
            if name == "main" and failing[0]:
                return web.json_response({"error": "overloaded"}, status=503)
            return web.json_response({"from": name})

        return handle

    targets = {}
    for name in seen:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler(name))
        server = await aiohttp_server(app)
        targets[name] = Target(url=str(server.make_url("")), name=name, cache="replay")
    table = RouteTable.build(
        [TargetClaims("main", fallbacks=("spare",)), TargetClaims("spare")], default="main"
    )
    recordings = Recordings(tmp_path / "answers.sqlite3")
    service = ProxyService(
        SETTINGS, targets["main"], routing=Routing(table, (targets["spare"],)), recall=recordings
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
            async with session.post(url, data=BODY) as response:
                assert await response.json() == {"from": "spare"}
            failing[0] = False
            await asyncio.sleep(0.2)  # a kept answer would be written by now
            async with session.post(url, data=BODY) as response:
                assert await response.json() == {"from": "main"}
            async with session.post(url, data=BODY) as response:  # main's answer, kept
                assert await response.json() == {"from": "main"}
        assert seen == {"main": 2, "spare": 1}
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()


async def test_a_stream_the_tool_left_after_its_final_event_is_kept(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The openai SDK hangs up as soon as it has read `data: [DONE]`; a target that ends its
    body a moment later must not leave the answer unrecorded (every repeat a miss)."""
    seen = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen[0] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(event)
        await asyncio.sleep(0.5)  # the end of body comes late (a gateway, a slow network)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    recordings = Recordings(tmp_path / "answers.sqlite3")
    target = Target(url=str(server.make_url("")), name="main", cache="replay")
    service = ProxyService(SETTINGS, target, recall=recordings)
    await service.start()
    try:
        url = f"http://127.0.0.1:{service.port}/v1/chat/completions"
        async with aiohttp.ClientSession() as session, session.post(url, data=BODY) as response:
            read = b""
            while not read.endswith(b"data: [DONE]\n\n"):
                read += await response.content.readany()
            response.close()  # as the SDK does: no waiting for the end of body
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session, session.post(url, data=BODY) as response:
            assert await response.read() == b"".join(EVENTS)
        assert seen == [1]  # the repeat came from the recording
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()


async def recorded_in_front_of(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    aiohttp_server: Any,
    tmp_path: Path,
    *,
    tap: Ends | None = None,
) -> tuple[ProxyService, Recordings]:
    """A started ProxyService in replay, its Recordings in ``tmp_path``, in front of a target
    on 127.0.0.1 that answers every request with ``handle`` (the caller stops and closes)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    recordings = Recordings(tmp_path / "answers.sqlite3")
    target = Target(url=str(server.make_url("")), name="main", cache="replay")
    service = ProxyService(SETTINGS, target, recall=recordings, tap=tap)
    await service.start()
    return service, recordings


class Ends(_Unheeding):
    """A capture tap keeping how each request ended, as the inspector is told."""

    def __init__(self) -> None:
        self.ends: list[ExchangeEnd] = []

    def begin(self, head: RequestHead) -> Ends:
        return self

    def end(self, end: ExchangeEnd) -> None:
        self.ends.append(end)


async def test_an_answer_not_kept_says_so_and_why_in_the_access_line_and_the_inspector(
    aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool that leaves a stream after its first event, and a 429: each was sent to be
    recorded and is not kept. The access line and the inspector said "miss" / "recorded" for
    both, as for a kept answer, so a person could not tell why every repeat still paid."""
    seen = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen[0] += 1
        if request.path == "/busy":
            return web.json_response({"error": "slow down"}, status=429)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(event)
            await asyncio.sleep(0.1)
        return response

    ends = Ends()
    service, recordings = await recorded_in_front_of(handle, aiohttp_server, tmp_path, tap=ends)
    base = f"http://127.0.0.1:{service.port}"
    try:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
            for _ in range(2):
                async with aiohttp.ClientSession() as session, session.post(f"{base}/v1/chat", data=BODY) as r:
                    assert await r.content.readany()
                    r.close()  # the tool leaves after the first event
                await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session, session.post(f"{base}/busy", data=BODY) as r:
                assert r.status == 429
            async with aiohttp.ClientSession() as session, session.post(f"{base}/v1/chat", data=BODY) as r:
                assert await r.read() == b"".join(EVENTS)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session, session.post(f"{base}/v1/chat", data=BODY) as r:
                assert await r.read() == b"".join(EVENTS)
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()
    assert seen == [4]  # the two left early were not kept: the third went out, the fourth replayed
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]
    left = "cache=unkept [client went away; not recorded: the tool hung up before the answer's end]"
    assert ["cache=" + line.split(" cache=", 1)[1] for line in lines] == [
        left,
        left,
        "cache=unkept [not recorded: the target answered 429]",
        "cache=miss",
        "cache=hit",
    ]
    assert [(end.cache, end.cache_note) for end in ends.ends] == [
        ("unkept", "the tool hung up before the answer's end"),
        ("unkept", "the tool hung up before the answer's end"),
        ("unkept", "the target answered 429"),
        ("miss", ""),
        ("hit", ""),
    ]


async def test_identical_requests_for_an_answer_past_16_mib_all_get_it_whole(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Three at once for a 30 MB answer in replay: the two following the first got 16 MiB and a
    cut (re-check of the attacker trial's fixes); each now gets all of it, and it is not kept."""
    seen = [0]
    block = b"z" * (256 * 1024)

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen[0] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(120):  # 30 MiB
            await response.write(block)
            await asyncio.sleep(0)
        return response

    service, recordings = await recorded_in_front_of(handle, aiohttp_server, tmp_path)
    url = f"http://127.0.0.1:{service.port}/v1/big"
    try:

        async def fetch_size() -> int:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return len(await response.read())

        sizes = await asyncio.gather(*(fetch_size() for _ in range(3)))
    finally:
        await service.stop(grace_s=0.2)
        recordings.close()
    assert sizes == [120 * len(block)] * 3
    assert seen == [1]  # the other two followed it
