"""The inspector's HTTP side, served by a real ProxyService on 127.0.0.1 in front of a real
aiohttp target, read with a real HTTP client.

What a person would notice: anyone else reading their prompts (a curl without the cookie, a
page on another localhost port, an editor web view, a foreign page); a link that opens the
inspector twice; a list that does not move while requests pass; an open inspector tab holding
up Stop or Quit; the inspector's own requests filling its list or the request counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.service import ProxyService
from desktop.inspector.access import COOKIE_NAME, InspectorAccess
from desktop.inspector.store import InspectorStore
from desktop.inspector.web import HEARTBEAT_S, InspectorPages

KEY = "sk-inspector-web-test-key-5f2a9c11d0"
# The page's path in these tests: each run makes one of its own (InspectorAccess.page_path);
# the fixture sets this one so the paths read plainly.
PAGE = "/__trayproxy/inspector/this-run/"
OPEN = "/__trayproxy/inspector/open"  # the one-time link: the same path every run
# Fetch Metadata the inspector page's own fetch() carries (Chromium, seen in test_page_browser).
FROM_PAGE = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
# A bound on waiting for something that takes milliseconds, not a timing claim.
WAIT_S = 10.0


@dataclass
class Target_:
    """The target: /v1/models at once, /v1/chat/completions streamed, held until released."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/echo-key", self.echo_key)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-test"}]})

    async def echo_key(self, request: web.Request) -> web.Response:
        return web.Response(text=f"you sent {request.headers.get('Authorization')}")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
        await self.release.wait()
        await response.write(b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n')
        await response.write_eof()
        return response


@dataclass
class Inspected:
    service: ProxyService
    store: InspectorStore
    access: InspectorAccess
    target: Target_
    client: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.access.secret}"}

    def as_page(self, **extra: str) -> dict[str, str]:
        """The headers of a request the inspector page itself makes."""
        return {**self.cookie, **FROM_PAGE, **extra}

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        async with self.client.get(self.base + path, headers=headers or {}) as response:
            return response.status, await response.read(), response.headers


@pytest.fixture
async def inspected(aiohttp_server: Any) -> AsyncIterator[Inspected]:
    target = Target_()
    server = await aiohttp_server(target.app())
    store = InspectorStore()
    access = InspectorAccess()
    access.page_path = PAGE
    service = ProxyService(
        ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=10.0),
        Target(
            url=str(server.make_url("")),
            name="openai",
            add_headers=(("Authorization", Secret(f"Bearer {KEY}")),),
        ),
        tap=store,
        pages=InspectorPages(store, access),
    )
    await service.start()
    # No cookie jar: every request says what it carries, as curl would.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        try:
            yield Inspected(service, store, access, target, client)
        finally:
            target.release.set()
            await service.stop(grace_s=1.0)


API_PATHS = [
    "",
    "app.js",
    "api/exchanges",
    "api/exchanges/1",
    "api/exchanges/1/raw",
    "api/events",
    "export.har",
    "export.jsonl",
]


@pytest.mark.parametrize("name", API_PATHS)
async def test_a_request_without_the_cookie_gets_403_and_no_data(inspected: Inspected, name: str) -> None:
    """curl on this machine, or any tool that did not come through the one-time link."""
    async with inspected.client.get(inspected.base + "/v1/models") as response:
        assert response.status == 200
    status, body, _ = await inspected.get(PAGE + name, FROM_PAGE)
    assert status == 403
    assert json.loads(body)["error"]["code"] == "inspector_forbidden"
    assert b"/v1/models" not in body


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("no Fetch Metadata (curl with a stolen cookie)", {}),
        (
            "a page on another localhost port",
            {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:3000"},
        ),
        ("its <img> or <script>", {"Sec-Fetch-Site": "same-site"}),
        ("an editor web view", {"Sec-Fetch-Site": "cross-site", "Origin": "vscode-webview://abc"}),
        ("a foreign page", {"Sec-Fetch-Site": "cross-site"}),
        ("a foreign page's fetch", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}),
        (
            "another origin claimed as our own",
            {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:3000"},
        ),
        (
            "a typed URL of the API",
            {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
        ),
    ],
)
async def test_the_cookie_alone_is_not_enough(
    inspected: Inspected, case: str, headers: dict[str, str]
) -> None:
    """Cookies go to every port of a host: a page on another localhost port can make the
    browser send ours. Only the inspector page's own requests (same-origin) are answered."""
    async with inspected.client.get(inspected.base + "/v1/models") as response:
        assert response.status == 200
    for name in ("api/exchanges", "export.jsonl"):
        status, body, _ = await inspected.get(PAGE + name, {**inspected.cookie, **headers})
        assert status == 403, case
        assert b"/v1/models" not in body


async def test_the_page_opens_from_a_typed_url_or_its_own_links(inspected: Inspected) -> None:
    typed = {
        **inspected.cookie,
        "Sec-Fetch-Site": "none",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    status, body, headers = await inspected.get(PAGE, typed)
    assert status == 200
    assert b"<!doctype html>" in body.lower()
    assert headers["Content-Type"].startswith("text/html")
    status, _, headers = await inspected.get(PAGE + "app.js", inspected.as_page())
    assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/javascript")
    status, _, _ = await inspected.get(PAGE + "app.js", {**typed, "Sec-Fetch-Dest": "script"})
    assert status == 403


async def test_every_answer_keeps_out_of_caches_frames_and_inline_scripts(inspected: Inspected) -> None:
    for name, headers in (
        ("", inspected.as_page()),
        ("api/exchanges", inspected.as_page()),
        ("api/exchanges", {}),
    ):
        _, _, answer = await inspected.get(PAGE + name, headers)
        assert answer["Cache-Control"] == "no-store"
        assert answer["X-Content-Type-Options"] == "nosniff"
        assert answer["X-Frame-Options"] == "DENY"
        assert answer["Referrer-Policy"] == "no-referrer"
        policy = answer["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy


async def test_a_one_time_code_gives_the_cookie_once(inspected: Inspected) -> None:
    """The link the tray or ``trayproxy inspect`` opens works once; the cookie it sets is
    HttpOnly, SameSite=Strict and sent only under /__trayproxy/."""
    async with inspected.client.post(
        inspected.base + PAGE + "api/code", headers=inspected.as_page()
    ) as answer:
        assert answer.status == 200
        code = (await answer.json())["code"]
    # As the opener file's navigation arrives: from a file:// page, so cross-site.
    opening = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    async with inspected.client.get(inspected.base + OPEN, params={"code": code}, headers=opening) as answer:
        assert answer.status == 200
        set_cookie = answer.headers["Set-Cookie"]
        page = await answer.text()
    cookie, *attributes = [part.strip() for part in set_cookie.split(";")]
    assert cookie == f"{COOKIE_NAME}={inspected.access.secret}"
    # Scoped to this run's page path: a page on another port of 127.0.0.1 is never sent it.
    assert {a.lower() for a in attributes} >= {"httponly", f"path={PAGE}", "samesite=strict"}
    assert f'content="0; url={PAGE}"' in page
    async with inspected.client.get(inspected.base + OPEN, params={"code": code}, headers=opening) as again:
        assert again.status == 403
        assert "Set-Cookie" not in again.headers
    # Without a code, or with one never issued.
    for query in ("", "?code=", "?code=" + "A" * len(code)):
        status, _, headers = await inspected.get(OPEN + query, opening)
        assert status == 403
        assert "Set-Cookie" not in headers


async def test_a_code_is_given_only_to_a_holder_of_the_cookie(inspected: Inspected) -> None:
    async with inspected.client.post(inspected.base + PAGE + "api/code", headers=FROM_PAGE) as answer:
        assert answer.status == 403


async def read_events(stream: aiohttp.ClientResponse, until: Any) -> list[tuple[str, Any]]:
    """Events of a text/event-stream until ``until(events)`` is true."""
    events: list[tuple[str, Any]] = []
    name, data = "message", ""
    async with asyncio.timeout(WAIT_S):
        async for raw in stream.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif not line and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""
                if until(events):
                    return events
    return events


async def test_the_push_stream_tells_each_request_as_it_starts_and_ends(inspected: Inspected) -> None:
    async with inspected.client.get(
        inspected.base + PAGE + "api/events", headers=inspected.as_page()
    ) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert await read_events(stream, lambda events: events) == [("reset", {})]
        chat = asyncio.create_task(
            inspected.client.post(
                inspected.base + "/v1/chat/completions", json={"model": "gpt-test", "stream": True}
            )
        )
        opened = await read_events(stream, lambda events: any(e[1].get("status") == 200 for e in events))
        assert {row["path"] for _, row in opened} == {"/v1/chat/completions"}
        assert opened[-1][1]["state"] == "open"
        inspected.target.release.set()
        answer = await chat
        assert await answer.read()
        answer.release()
        done = await read_events(stream, lambda events: events[-1][1].get("state") == "done")
        assert done[-1][0] == "row"
        assert done[-1][1]["id"] == opened[-1][1]["id"]
        assert KEY not in json.dumps(opened + done)


async def test_clear_empties_the_list_and_tells_the_push_stream(inspected: Inspected) -> None:
    async with inspected.client.get(inspected.base + "/v1/models") as response:
        assert response.status == 200
    async with inspected.client.get(
        inspected.base + PAGE + "api/events", headers=inspected.as_page()
    ) as stream:
        await read_events(stream, lambda events: events)
        async with inspected.client.post(
            inspected.base + PAGE + "api/clear", headers=inspected.as_page()
        ) as cleared:
            assert cleared.status == 204
        assert await read_events(stream, lambda events: events) == [("reset", {})]
    status, body, _ = await inspected.get(PAGE + "api/exchanges", inspected.as_page())
    assert (status, json.loads(body)["rows"]) == (200, [])


async def test_an_open_push_stream_does_not_hold_up_stop(inspected: Inspected) -> None:
    """An inspector tab left open: Stop, Quit or a port move end its stream at once instead of
    waiting out the stop grace period (10 s here)."""
    async with inspected.client.get(
        inspected.base + PAGE + "api/events", headers=inspected.as_page()
    ) as stream:
        await read_events(stream, lambda events: events)
        started = time.monotonic()
        await inspected.service.stop()
        stopped_in = time.monotonic() - started
        async with asyncio.timeout(WAIT_S):
            rest = await stream.content.read()
    assert stopped_in < 1.0
    assert rest == b""  # ended cleanly: nothing more, no heartbeat
    assert HEARTBEAT_S > 1.0


async def test_push_streams_end_when_the_pages_are_closed(inspected: Inspected) -> None:
    """The inspector switched off (the controller calls close_streams as it stops serving the
    pages): an open tab's stream ends at once instead of sending heartbeats until a stop."""
    pages = inspected.service.pages
    assert isinstance(pages, InspectorPages)
    async with inspected.client.get(
        inspected.base + PAGE + "api/events", headers=inspected.as_page()
    ) as stream:
        await read_events(stream, lambda events: events)
        pages.close_streams()
        async with asyncio.timeout(WAIT_S):
            rest = await stream.content.read()
    assert rest == b""
    async with inspected.client.get(
        inspected.base + PAGE + "api/events", headers=inspected.as_page()
    ) as stream:  # served again: a new stream is a stream like any
        assert await read_events(stream, lambda events: events) == [("reset", {})]


async def test_the_inspector_is_neither_counted_nor_listed(inspected: Inspected) -> None:
    """An open inspector polls and streams; none of it may show up as traffic."""
    async with inspected.client.get(inspected.base + "/v1/models") as response:
        assert response.status == 200
    for name in ("", "app.js", "style.css", "api/exchanges", "export.har", "nothing-here"):
        await inspected.get(PAGE + name, inspected.as_page())
    await inspected.get(PAGE + "api/exchanges", {})  # refused: not listed either
    status, body, _ = await inspected.get("/__trayproxy/health")
    assert status == 200
    assert json.loads(body)["requests_total"] == 1
    status, body, _ = await inspected.get(PAGE + "api/exchanges", inspected.as_page())
    listing = json.loads(body)
    assert [row["path"] for row in listing["rows"]] == ["/v1/models"]
    assert listing["body_capture"] is True


async def test_detail_raw_and_exports_of_one_exchange(inspected: Inspected) -> None:
    async with inspected.client.get(inspected.base + "/echo-key") as response:
        assert KEY in await response.text()  # the target echoes the key it was given
    (row,) = json.loads((await inspected.get(PAGE + "api/exchanges", inspected.as_page()))[1])["rows"]
    status, body, _ = await inspected.get(PAGE + f"api/exchanges/{row['id']}", inspected.as_page())
    assert status == 200
    assert json.loads(body)["id"] == row["id"]
    status, raw, headers = await inspected.get(PAGE + f"api/exchanges/{row['id']}/raw", inspected.as_page())
    assert (status, headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
    assert raw.startswith(b"you sent ")
    assert KEY.encode() not in raw
    for extension in ("har", "jsonl"):
        status, body, headers = await inspected.get(
            PAGE + f"export.{extension}?id={row['id']}", inspected.as_page()
        )
        assert status == 200
        assert headers["Content-Disposition"].startswith('attachment; filename="trayproxy-')
        assert headers["Content-Disposition"].endswith(f'-{row["id"]}.{extension}"')
        assert KEY.encode() not in body
    for missing in (
        "api/exchanges/999",
        "api/exchanges/999/raw",
        "api/exchanges/x",
        "export.har?id=999",
        # Digits to str.isdigit() that int() refuses, and digits of another script.
        "export.har?id=%C2%B2",
        "export.jsonl?id=%E2%91%A0",
        f"export.har?id={str(row['id']).translate(str.maketrans('0123456789', '٠١٢٣٤٥٦٧٨٩'))}",
    ):
        status, _, _ = await inspected.get(PAGE + missing, inspected.as_page())
        assert status == 404, missing


async def test_the_list_says_when_body_capture_is_off(inspected: Inspected) -> None:
    """The page shows a notice: with bodies off, a person must not wonder where they went."""
    store = inspected.store
    store.configure(max_rows=store.max_rows, body_cap_bytes=store.body_cap_bytes, keep_bodies=False)
    async with inspected.client.get(inspected.base + "/v1/models") as response:
        assert response.status == 200
    status, body, _ = await inspected.get(PAGE + "api/exchanges", inspected.as_page())
    assert status == 200
    listing = json.loads(body)
    assert listing["body_capture"] is False
    assert [row["body_state"] for row in listing["rows"]] == ["off"]


async def test_an_export_of_everything_holds_every_request_oldest_first(inspected: Inspected) -> None:
    for path in ("/v1/models", "/echo-key"):
        async with inspected.client.get(inspected.base + path) as response:
            assert response.status == 200
    status, body, headers = await inspected.get(PAGE + "export.jsonl", inspected.as_page())
    assert status == 200
    assert headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line)["path"] for line in body.decode().splitlines()] == ["/v1/models", "/echo-key"]
    assert KEY.encode() not in body
    status, body, headers = await inspected.get(PAGE + "export.har", inspected.as_page())
    assert status == 200
    entries = json.loads(body)["log"]["entries"]
    assert [entry["request"]["url"].split("/", 3)[3] for entry in entries] == ["v1/models", "echo-key"]


async def test_the_raw_view_masks_a_key_the_client_sent_even_without_a_known_shape(
    aiohttp_server: Any,
) -> None:
    """A keyless target (a local Ollama, a gateway taking the tool's own key) that quotes the
    key it was sent in its error: the raw body shown masks that key too, whatever it looks like."""
    client_key = "plainclientvalue4471"  # no sk- prefix: redact_text alone does not know it

    async def complain(request: web.Request) -> web.Response:
        return web.Response(status=401, text=f"invalid api key {request.headers.get('X-Api-Key')}")

    app = web.Application()
    app.router.add_get("/v1/models", complain)
    server = await aiohttp_server(app)
    store, access = InspectorStore(), InspectorAccess()
    access.page_path = PAGE
    service = ProxyService(
        ProxySettings(hosts=("127.0.0.1",), port=0),
        Target(url=str(server.make_url("")), name="local"),
        tap=store,
        pages=InspectorPages(store, access),
    )
    await service.start()
    base = f"http://127.0.0.1:{service.port}"
    page = {"Cookie": f"{COOKIE_NAME}={access.secret}", **FROM_PAGE}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            async with client.get(base + "/v1/models", headers={"X-Api-Key": client_key}) as response:
                assert client_key in await response.text()  # the target did quote it
            (exchange,) = store.exchanges()
            async with client.get(f"{base}{PAGE}api/exchanges/{exchange.id}/raw", headers=page) as response:
                raw = await response.text()
    finally:
        await service.stop(grace_s=0.5)
    assert raw.startswith("invalid api key ")
    assert client_key not in raw


async def test_head_is_answered_for_the_page_files_only(inspected: Inspected) -> None:
    """A HEAD of the push stream would otherwise hold a connection open with nothing to send."""
    async with inspected.client.head(inspected.base + PAGE + "app.js", headers=inspected.as_page()) as answer:
        assert answer.status == 200
    async with asyncio.timeout(WAIT_S):
        async with inspected.client.head(
            inspected.base + PAGE + "api/events", headers=inspected.as_page()
        ) as answer:
            assert answer.status == 404


async def test_the_one_time_link_opens_from_a_local_file_and_nothing_else_crosses_sites(
    inspected: Inspected,
) -> None:
    """The opener file (file://) navigates to the one-time link as a cross-site top-level
    navigation: that one request passes the guard; the same headers on any other inspector path,
    or the link fetched by a page's script, are refused."""
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    from_script = {**navigation, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}
    code = inspected.access.issue_code()
    status, _, _ = await inspected.get(f"{OPEN}?code={code}", from_script)
    assert status == 403
    status, _, headers = await inspected.get(f"{OPEN}?code={code}", navigation)
    assert status == 200
    assert f"{COOKIE_NAME}=" in headers["Set-Cookie"]
    for path in ("", "api/exchanges", "export.har"):
        status, _, _ = await inspected.get(PAGE + path, {**inspected.cookie, **navigation})
        assert status == 403, path


async def test_only_this_runs_page_path_answers(inspected: Inspected) -> None:
    """The inspector's old fixed path (a bookmark from an earlier run, a guess) is refused even
    with the cookie: the page and its API live under this run's path alone."""
    for path in (
        "/__trayproxy/inspector/",
        "/__trayproxy/inspector/api/exchanges",
        "/__trayproxy/inspector/x/api/exchanges",
    ):
        status, body, _ = await inspected.get(path, inspected.as_page())
        assert status == 403, path
        assert b"Open inspector" in body
    status, _, _ = await inspected.get(PAGE + "api/exchanges", inspected.as_page())
    assert status == 200
