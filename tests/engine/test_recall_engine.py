"""The engine's side of recorded answers, with a recording kept in a dict (the real store,
desktop.cache, has tests of its own): what is looked up, what the client gets from a recording,
what is recorded, and that an offline target is never contacted.

Real targets and clients on 127.0.0.1; only the recording is this file's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from multidict import CIMultiDict

from desktop import redaction
from desktop.config.model import ProxySettings, Routing, Target
from desktop.engine.accesslog import ACCESS_LOGGER
from desktop.engine.capture import ExchangeEnd
from desktop.engine.recall import RecallRequest, Recorder, Replay
from desktop.engine.service import ProxyService
from desktop.routing import RouteTable, TargetClaims

SETTINGS = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=1.0)
EVENTS = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"]

Key = tuple[str, str, str, str, bytes]


class DictRecording:
    """Answers kept by (target, method, path, query, body); asked questions listed."""

    def __init__(self) -> None:
        self.kept: dict[Key, tuple[int, str, tuple[tuple[str, str], ...], list[bytes]]] = {}
        self.asked: list[RecallRequest] = []
        self.cut_follow = False

    async def explain_miss(self, request: RecallRequest) -> str:
        return ""

    async def lookup(self, request: RecallRequest) -> Replay | Recorder | None:
        self.asked.append(request)
        key = (request.target, request.method, request.path, request.query, request.body)
        if self.cut_follow:
            return Replay(200, "OK", (("Content-Type", "text/event-stream"),), self._cut(), source="follow")
        if key in self.kept and request.mode != "record":
            status, reason, headers, pieces = self.kept[key]
            return Replay(status, reason, headers, self._pieces(pieces), length=sum(map(len, pieces)))
        if request.mode == "offline":
            return None
        return _DictRecorder(self, key)

    @staticmethod
    async def _pieces(pieces: list[bytes]) -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    @staticmethod
    async def _cut() -> AsyncIterator[bytes]:
        yield EVENTS[0]
        raise ConnectionResetError("the followed answer was cut")


class _DictRecorder:
    def __init__(self, recording: DictRecording, key: Key) -> None:
        self.recording, self.key = recording, key
        self.head: tuple[int, str, tuple[tuple[str, str], ...]] | None = None
        self.pieces: list[bytes] = []

    def request_body(self, body: bytes) -> None: ...
    def request_piece(self, piece: bytes) -> None: ...
    def message(self, to_target: bool, size: int, at: float) -> None: ...

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        self.head = (status, reason, tuple(headers.items()))

    def chunk(self, data: bytes, at: float) -> None:
        self.pieces.append(data)

    def declines(self, end: ExchangeEnd) -> str:
        return "" if self.head is not None and 200 <= end.status < 300 and not end.note else "not clean"

    def end(self, end: ExchangeEnd) -> None:
        if not self.declines(end):
            self.recording.kept[self.key] = (*self.head, self.pieces)  # type: ignore[misc]


class Counted:
    """A target that answers SSE on /stream and JSON elsewhere, counting what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append(request.path_qs)
        if request.path.endswith("/stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-From": self.name})
            await response.prepare(request)
            for event in EVENTS:
                await response.write(event)
                await asyncio.sleep(0.01)
            await response.write_eof()
            return response
        return web.json_response({"from": self.name, "path": request.path_qs})


@pytest.fixture
async def targets(aiohttp_server: Any) -> dict[str, tuple[Counted, Target]]:
    made = {}
    for name in ("main", "spare"):
        counted = Counted(name)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", counted.handle)
        server = await aiohttp_server(app)
        made[name] = (counted, Target(url=str(server.make_url("")), name=name, cache="replay"))
    return made


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    services: list[ProxyService] = []

    async def start(target: Target, recording: DictRecording, routing: Routing | None = None) -> ProxyService:
        service = ProxyService(SETTINGS, target, routing=routing, recall=recording)
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop(grace_s=0.2)


async def fetch(port: int, path: str, body: bytes = b"{}", **headers: str) -> tuple[int, list[bytes], str]:
    """Status, the body as the pieces the client read, and the ``X-From`` header."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as r,
    ):
        pieces = [piece async for piece, _ in r.content.iter_chunks() if piece]
        return r.status, pieces, r.headers.get("X-From", "")


async def test_a_repeat_is_answered_from_the_recording_without_contacting_the_target(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    counted, target = targets["main"]
    recording = DictRecording()
    service = await serve(target, recording)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        first = await fetch(service.port, "/v1/stream?x=1", b'{"model": "m"}')
        again = await fetch(service.port, "/v1/stream?x=1", b'{"model": "m"}')
        await asyncio.sleep(0.05)
    assert counted.seen == ["/v1/stream?x=1"]  # once: the repeat came from the recording
    assert first[0] == again[0] == 200
    assert b"".join(again[1]) == b"".join(EVENTS) == b"".join(first[1])
    assert again[2] == "main"  # the target's own headers, as recorded
    asked = recording.asked[0]
    assert (asked.mode, asked.target, asked.method, asked.path, asked.query) == (
        "replay",
        "main",
        "POST",
        "/v1/stream",
        "x=1",
    )
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["cache=miss", "cache=hit"]


async def test_offline_answers_what_was_recorded_and_refuses_the_rest_without_contacting_the_target(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    counted, target = targets["main"]
    recording = DictRecording()
    recording.kept[("main", "POST", "/v1/chat", "", b"{}")] = (
        200,
        "OK",
        (("X-From", "tape"),),
        [b'{"ok": 1}'],
    )
    service = await serve(replace(target, cache="offline"), recording)
    assert await fetch(service.port, "/v1/chat") == (200, [b'{"ok": 1}'], "tape")
    status, pieces, _ = await fetch(service.port, "/v1/chat", b'{"other": 1}')
    assert status == 504
    error = b"".join(pieces).decode()
    assert "cache_offline_miss" in error
    assert "POST /v1/chat" in error
    assert "main" in error

    # A body of no stated length cannot be looked up: offline, it is refused and says why.
    async def chunked() -> AsyncIterator[bytes]:
        yield b"{}"

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{service.port}/v1/chat", data=chunked()) as r,
    ):
        assert r.status == 504
        assert "no Content-Length" in (await r.json())["error"]["message"]
    assert counted.seen == []


async def test_record_mode_sends_every_request_and_off_never_asks(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    counted, target = targets["main"]
    recording = DictRecording()
    service = await serve(replace(target, cache="record"), recording)
    for _ in range(2):
        assert (await fetch(service.port, "/v1/chat"))[0] == 200
    assert len(counted.seen) == 2
    assert len(recording.kept) == 1
    service.set_target(replace(target, cache="off"))
    asked = len(recording.asked)
    assert (await fetch(service.port, "/v1/chat"))[0] == 200
    assert len(recording.asked) == asked
    assert len(counted.seen) == 3


async def test_a_routed_hit_contacts_neither_the_target_nor_its_fallback(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    main, main_target = targets["main"]
    spare, spare_target = targets["spare"]
    table = RouteTable.build(
        [TargetClaims("main", prefixes=("/p",), fallbacks=("spare",)), TargetClaims("spare")], default="main"
    )
    recording = DictRecording()
    service = await serve(main_target, recording, Routing(table, (spare_target,)))
    first = await fetch(service.port, "/p/v1/stream")
    assert (await fetch(service.port, "/p/v1/stream")) == first
    assert main.seen == ["/v1/stream"]
    assert spare.seen == []
    assert recording.asked[0].path == "/v1/stream"  # the prefix cut, as the target is sent it


async def test_a_followed_recording_that_is_cut_cuts_the_client_too(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    _, target = targets["main"]
    recording = DictRecording()
    recording.cut_follow = True
    service = await serve(target, recording)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(service.port, "/v1/stream")


@pytest.mark.parametrize("routed", [False, True])
async def test_offline_refuses_a_websocket_upgrade_without_contacting_the_target(
    aiohttp_server: Any, serve: Callable[..., Any], routed: bool
) -> None:
    upgrades: list[str] = []

    async def socket(request: web.Request) -> web.WebSocketResponse:
        upgrades.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", socket)
    server = await aiohttp_server(app)
    target = Target(url=str(server.make_url("")), name="main", cache="offline")
    routing = None
    if routed:
        table = RouteTable.build([TargetClaims("main", prefixes=("/p",))], default="main")
        routing = Routing(table, ())
    service = await serve(target, DictRecording(), routing)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"http://127.0.0.1:{service.port}/p/v1/realtime")
    assert refused.value.status == 504
    assert upgrades == []  # offline: nothing leaves the machine, a WebSocket neither


async def test_a_model_renamed_in_the_path_is_looked_up_as_the_client_named_it(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    """A Gemini model in the path, renamed by the target's model_map: the recording is asked
    with the path as the client sent it (prefix cut), as a model renamed in the body is."""
    main, main_target = targets["main"]
    table = RouteTable.build(
        [TargetClaims("main", prefixes=("/g",), model_map={"fast": "gemini-2.0-flash"})], default="main"
    )
    recording = DictRecording()
    service = await serve(main_target, recording, Routing(table, ()))
    assert (await fetch(service.port, "/g/v1beta/models/fast:generateContent?alt=sse"))[0] == 200
    assert main.seen == ["/v1beta/models/gemini-2.0-flash:generateContent?alt=sse"]  # renamed when sent
    asked = recording.asked[0]
    assert (asked.path, asked.query) == ("/v1beta/models/fast:generateContent", "alt=sse")


async def test_the_sdks_do_not_retry_an_offline_miss(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    """The openai and anthropic SDKs retry a 5xx twice with a backoff by default; an offline miss
    would then take over a second and three lookups to say what the first one said."""
    counted, target = targets["main"]
    recording = DictRecording()
    service = await serve(replace(target, cache="offline"), recording)
    base = f"http://127.0.0.1:{service.port}"
    chat = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="placeholder")
    claude = anthropic.AsyncAnthropic(base_url=base, api_key="placeholder")
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            await chat.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 504
        with pytest.raises(anthropic.InternalServerError) as refused_claude:
            await claude.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert refused_claude.value.status_code == 504
    finally:
        await chat.close()
        await claude.close()
    assert [asked.path for asked in recording.asked] == ["/v1/chat/completions", "/v1/messages"]
    assert counted.seen == []


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"


async def test_a_replay_frames_its_body_itself_whatever_the_recording_says(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    """A recording is checked when written or imported; a replay checks its framing again, so
    no stored answer can give a kept-alive client bytes it reads as its next answer, or make it
    wait for bytes that never come."""
    counted, target = targets["main"]
    recording = DictRecording()
    recording.kept[("main", "POST", "/no-content", "", b"{}")] = (204, "No Content", (), [INJECTED])
    recording.kept[("main", "POST", "/long", "", b"{}")] = (
        200,
        "OK",
        (("Content-Length", "500"), ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive")),
        [b"short"],
    )
    service = await serve(replace(target, cache="offline"), recording)
    base = f"http://127.0.0.1:{service.port}"
    timeout = aiohttp.ClientTimeout(total=2)
    connector = aiohttp.TCPConnector(limit=1)  # every request on the one kept-alive connection
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(f"{base}/no-content", data=b"{}") as r:
            assert (r.status, await r.read()) == (204, b"")
        async with session.post(f"{base}/long", data=b"{}") as r:
            assert (r.status, await r.read()) == (200, b"short")
            assert r.headers.get("Content-Length") in (None, "5")
        async with session.head(f"{base}/long") as r:  # unrecorded: offline says so, in time
            assert r.status == 504
        async with session.post(f"{base}/long", data=b"{}") as r:
            assert (r.status, await r.read()) == (200, b"short")
    assert counted.seen == []


PATH_KEY = "sk-proj-PathKey0123456789abcdefghijklmnop"


async def test_a_key_in_a_path_or_a_target_url_is_neither_recorded_nor_echoed(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any]
) -> None:
    """serve --target URL records under the URL: a key in it went into the file, `cache stats`
    and exports; an offline miss repeated a key-shaped path in its message (attacker trial)."""
    _, target = targets["main"]
    recording = DictRecording()
    # As serve --target URL makes it: named by its URL.
    url = f"{target.url.rstrip('/')}/gw/{PATH_KEY}"
    keyed = replace(target, name=url, url=url, cache="record")
    service = await serve(keyed, recording)
    assert (await fetch(service.port, "/v1/chat"))[0] == 200
    assert recording.asked[0].target.endswith("/gw/sk-***")
    assert redaction.holds_registered_secret(f"echo {PATH_KEY}")  # an answer echoing it is not kept
    service.set_target(replace(target, cache="offline"))
    status, pieces, _ = await fetch(service.port, f"/gw/{PATH_KEY}/v1/models")
    assert status == 504
    assert PATH_KEY not in b"".join(pieces).decode()
    assert "/gw/sk-***/v1/models" in b"".join(pieces).decode()


async def test_a_routed_offline_miss_names_the_target_asked(
    targets: dict[str, tuple[Counted, Target]], serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """With routes, the miss's access line and inspector row named no target ("via default ->
    504"), so a filter by target hid exactly the misses (cold user trial)."""
    main, main_target = targets["main"]
    _, spare_target = targets["spare"]
    table = RouteTable.build(
        [TargetClaims("main", prefixes=("/p",), fallbacks=("spare",)), TargetClaims("spare")], default="main"
    )
    service = await serve(replace(main_target, cache="offline"), DictRecording(), Routing(table, (spare_target,)))
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        status, _, _ = await fetch(service.port, "/p/v1/chat", b'{"not": "recorded"}')
        await asyncio.sleep(0.05)
    assert status == 504
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]
    assert len(lines) == 1
    assert "-> main 504" in lines[0], lines[0]
    assert main.seen == []
