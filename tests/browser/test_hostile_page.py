"""A web page the person visits cannot spend the key, shown in a real headless Chromium.

Issue 12 §2: a page's <img>, <script>, <link>, <iframe>, GET form or no-cors fetch() carries no
Origin, and each one reached the target with the key added (18 in one Chromium run); a later
trial found the page's speculation rules doing the same (Chromium prefetches and prerenders the
URLs they name by itself, marked as if the person had typed them). Here the page ``hostile_page.html``, served as ``http://evil.test:PORT/`` (Chromium maps evil.test to
127.0.0.1 and every other name to "not found", so nothing leaves the machine), tries every kind
of request a page can make against the proxy at 127.0.0.1, localhost and [::1]: `trayproxy
serve`, a real subprocess listening on both loopbacks, in front of a recording aiohttp target.

The target must see no request with the key. So that this cannot pass because the page fired
nothing, the proxy's own request lines must show every kind of request from every address; and
with evil.test's origin allowed, what carries an Origin does reach the target with the key.

Chromium is driven over its DevTools protocol with the ``websockets`` package (no driver, no
browser download). Without Chromium the tests skip, except under CI (``CI`` set), where they
fail: a skipped attack test would hide a page that spends the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from background import free_port
from cli_process import ServeProcess
from listen_helpers import proxy_answers
from websockets.asyncio.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL_HINT = "apt-get install --no-install-recommends chromium (tests/system-deps.sh)"
PAGE = Path(__file__).with_name("hostile_page.html")
KEY_VARIABLE = "TP_HOSTILE_PAGE_KEY"
REAL_KEY = "sk-real-target-key-hostile-page-7c41e0d2"
# What the page tries, against each of the proxy's addresses (hostile_page.html).
KINDS = (
    "img",
    "script",
    "stylesheet",
    "iframe",
    "form-get",
    "form-post",
    "fetch-no-cors-get",
    "fetch-no-cors-post",
    "fetch-cors-get",
    "fetch-cors-post",
    "beacon",
    "xhr",
    "websocket",
    "eventsource",
    "window-open",
    "link-click",
    # Speculation rules (issue 12 §2, a later trial): Chromium's own prefetch and prerender.
    "spec-list-prefetch",
    "spec-list-prerender",
    "spec-document-prefetch",
    "spec-document-prerender",
)
VIAS = ("ipv4", "localhost", "ipv6", "devbox")
# The proxy also allows devbox.test (`--allow-host`, as the README's devbox.local), which
# Chromium maps to 127.0.0.1. Not a loopback name, so browsers send it no Fetch Metadata: the
# guard tells a page's request there by the browser's User-Agent.
ADDED_HOST = "devbox.test"
# Kinds Chromium loads by itself, ahead of time, from the page's speculation rules: marked
# `Sec-Fetch-Site: none` (as if the person had typed the URL) and `Sec-Purpose`.
SPECULATIVE = frozenset(kind for kind in KINDS if kind.startswith("spec-"))
# Every (kind, via) the page tries: Chromium makes no speculative load across sites to a URL
# that is not potentially trustworthy (none to devbox.test, seen), so the page asks for none.
TRIED = frozenset(
    (kind, via) for kind in KINDS for via in VIAS if not (kind in SPECULATIVE and via == "devbox")
)
# Kinds whose requests carry the page's Origin (Fetch standard: CORS mode, a method other than
# GET/HEAD, WebSocket handshakes): with evil.test allowed these may pass, the others never.
WITH_ORIGIN = frozenset(
    {
        "form-post",
        "fetch-no-cors-post",
        "fetch-cors-get",
        "fetch-cors-post",
        "beacon",
        "xhr",
        "websocket",
        "eventsource",
    }
)
# Bounds on waiting, not timing claims: a Python start with aiohttp, and Chromium's, on a
# loaded two-core machine; every attempt on the page gives up after 4 s (ATTEMPT_MS).
SERVE_TIMEOUT_S = 20.0
BROWSER_START_TIMEOUT_S = 20.0
PAGE_TIMEOUT_S = 25.0
# After the page says it is done, requests still on their way (a beacon, a popup's navigation).
STRAGGLERS_S = 5.0
BROWSER_CLOSE_TIMEOUT_S = 10.0
# Chromium's flags: a throwaway profile, nothing fetched in the background, evil.test on this
# machine and every other name unresolvable. The rules apply to address literals too, so the
# proxy's 127.0.0.1 and ::1 are excluded from them as localhost is (without, only localhost
# was reached).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-popup-blocking",  # window.open and target=_blank without a click
    f"--host-resolver-rules=MAP evil.test 127.0.0.1, MAP {ADDED_HOST} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1",
    "--remote-debugging-port=0",
)
# One request line of the proxy's access log: "METHOD /path?query" ... [note]
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/\S*)" (?P<rest>.*)$')


def require_chromium() -> str:
    """Chromium's path; skip (locally) or fail (under CI) when it is not installed."""
    if CHROMIUM is not None:
        return CHROMIUM
    message = f"the browser attack test needs Chromium: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Arrival:
    """One request as the target received it."""

    kind: str
    via: str
    method: str
    with_key: bool


@dataclass
class Target:
    """The recording target behind the proxy."""

    arrivals: list[Arrival] = field(default_factory=list)

    def with_key(self) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if arrival.with_key]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        self.arrivals.append(
            Arrival(
                kind=query.get("attack", request.path),
                via=query.get("via", "-"),
                method=request.method,
                with_key=any(REAL_KEY in value for value in request.headers.values()),
            )
        )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close()
            return ws
        return web.json_response({"object": "list", "data": []})


@dataclass
class AttackerSite:
    """http://evil.test:PORT/ serves the page; the page reports to /done when it is through."""

    proxy_port: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: list[dict[str, str]] = field(default_factory=list)
    # What the proxy has received so far (its access log), once it runs.
    proxy_received: Callable[[], list[Received]] = list

    async def page(self, request: web.Request) -> web.Response:
        html = PAGE.read_text(encoding="utf-8").replace("{{PROXY_PORT}}", str(self.proxy_port))
        return web.Response(text=html, content_type="text/html")

    async def seen(self, request: web.Request) -> web.Response:
        """``["KIND VIA", ...]`` of what has reached the proxy: the page holds its pop-ups
        until its speculation rules have fired (a pop-up puts the page in the background,
        where Chromium drops them)."""
        return web.json_response(sorted({f"{r.kind} {r.via}" for r in self.proxy_received()}))

    async def report(self, request: web.Request) -> web.Response:
        self.outcomes = json.loads(await request.text())
        self.done.set()
        return web.Response(status=204)


@dataclass(frozen=True)
class Received:
    """One request as the proxy's access log tells it: what the page tried, and the answer."""

    kind: str
    via: str
    method: str
    forwarded: bool
    note: str
    line: str


def received_by_proxy(serve: ServeProcess) -> list[Received]:
    """Every request line in the proxy's access log (the test's health checks left out); a
    request the page did not name (the browser's own favicon request) is its path."""
    received = []
    for line in serve.lines_with('"'):
        match = _ACCESS_LINE.search(line.rstrip())
        if match is None or match["path"].startswith("/__trayproxy/"):
            continue
        path, _, query_text = match["path"].partition("?")
        query = parse_qs(query_text)
        note = re.search(r"\[([^\]]+)\]$", match["rest"])
        received.append(
            Received(
                kind=query.get("attack", [path])[0],
                via=query.get("via", ["-"])[0],
                method=match["method"],
                forwarded=match["rest"].startswith("-> "),
                note=note[1] if note else "",
                line=line.strip(),
            )
        )
    return received


@contextlib.contextmanager
def serving_proxy(config: Path, target_url: str, port: int, *flags: str) -> Iterator[ServeProcess]:
    config.write_text(
        f'[listen]\nhosts = ["127.0.0.1", "::1"]\nport = {port}\n'
        f'[targets.keyed]\nurl = "{target_url}"\nkey = {{ env = "{KEY_VARIABLE}" }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    serve = ServeProcess(config, *flags, env={KEY_VARIABLE: REAL_KEY})
    try:
        yield serve
    except BaseException:
        # The test's own failure says more than how the proxy then exited.
        with contextlib.suppress(AssertionError):
            serve.stop()
        raise
    serve.stop()


async def wait_for_proxy(serve: ServeProcess, port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVE_TIMEOUT_S
    for host in ("127.0.0.1", "::1"):
        while not await asyncio.to_thread(proxy_answers, port, host, timeout_s=2.0):
            assert serve.proc.poll() is None, serve.stderr
            assert loop.time() < deadline, f"trayproxy serve did not answer on {host}:\n{serve.stderr}"
            await asyncio.sleep(0.2)


def _new_profile(profile: Path) -> BinaryIO:
    """Make the empty profile folder; the log Chromium writes beside it, opened for it."""
    profile.mkdir()
    return (profile.parent / "chromium.log").open("wb")


@contextlib.asynccontextmanager
async def headless_chromium(profile: Path) -> AsyncIterator[str]:
    """Chromium with a fresh profile; yields its browser-wide DevTools WebSocket URL."""
    log = _new_profile(profile)
    process = await asyncio.create_subprocess_exec(
        require_chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group: its helpers are stopped with it
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(BROWSER_START_TIMEOUT_S):
            while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
                assert process.returncode is None, (profile.parent / "chromium.log").read_text(
                    errors="replace"
                )
                await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        try:
            async with asyncio.timeout(BROWSER_CLOSE_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.close()


async def run_page(page_url: str, profile: Path, site: AttackerSite) -> None:
    """Open ``page_url`` in a new headless Chromium, wait for its report, close the browser."""
    async with headless_chromium(profile) as devtools_url, connect(devtools_url) as devtools:
        await devtools.send(
            json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": page_url}})
        )
        try:
            async with asyncio.timeout(PAGE_TIMEOUT_S):
                await site.done.wait()
            await asyncio.sleep(STRAGGLERS_S)
        finally:
            await devtools.send(json.dumps({"id": 2, "method": "Browser.close"}))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BROWSER_CLOSE_TIMEOUT_S):
                    async for _ in devtools:  # until Chromium closes the connection
                        pass


@dataclass
class AttackRun:
    received: list[Received]
    target: Target
    outcomes: list[dict[str, str]]

    def summary(self) -> str:
        return (
            f"the page fired {len(self.received)} requests at the proxy; "
            f"{len(self.target.with_key())} reached the target with the key"
        )


async def attack(aiohttp_server, tmp_path: Path, *flags: str, allowed_origin: bool = False) -> AttackRun:
    """Serve the page, start the proxy (with evil.test's origin allowed when asked), open the
    page in Chromium; what the proxy received and what the target saw."""
    target = Target()
    target_app = web.Application()
    target_app.router.add_route("*", "/{tail:.*}", target.handle)
    target_server = await aiohttp_server(target_app)
    proxy_port = free_port()
    site = AttackerSite(proxy_port=proxy_port)
    site_app = web.Application()
    site_app.router.add_get("/", site.page)
    site_app.router.add_get("/seen", site.seen)
    site_app.router.add_post("/done", site.report)
    site_server = await aiohttp_server(site_app)
    page_url = f"http://evil.test:{site_server.port}/"
    flags = (*flags, "--allow-host", ADDED_HOST)
    if allowed_origin:
        flags = (*flags, "--allow-origin", f"http://evil.test:{site_server.port}")
    target_url = str(target_server.make_url("")).rstrip("/")
    with serving_proxy(tmp_path / "config.toml", target_url, proxy_port, *flags) as serve:
        await wait_for_proxy(serve, proxy_port)
        site.proxy_received = functools.partial(received_by_proxy, serve)
        await run_page(page_url, tmp_path / "profile", site)
        received = received_by_proxy(serve)
    return AttackRun(received=received, target=target, outcomes=site.outcomes)


async def test_hostile_page_never_gets_the_key_added(aiohttp_server, tmp_path: Path, capsys) -> None:
    """Every request the page makes, of every kind, at 127.0.0.1, localhost, [::1] and the
    added host devbox.test, reaches the proxy and is refused there: the target sees none, with
    the key or without."""
    run = await attack(aiohttp_server, tmp_path)
    with capsys.disabled():
        print(f"\nhostile page, default origins: {run.summary()}")
    leaked = sorted({(a.kind, a.via, a.method) for a in run.target.with_key()})
    assert leaked == [], f"{run.summary()}: {leaked}"
    fired = {(r.kind, r.via) for r in run.received}
    missing = sorted(TRIED - fired)
    assert missing == [], f"the page did not fire these (so the test proves nothing of them): {missing}"
    assert [r.line for r in run.received if r.forwarded] == []
    assert run.target.arrivals == []
    assert {r.note for r in run.received if r.kind in SPECULATIVE} == {"speculative_load_refused"}


async def test_the_same_page_from_an_allowed_origin_reaches_the_target(
    aiohttp_server, tmp_path: Path, capsys
) -> None:
    """The control: with evil.test's origin allowed (as a person would allow their own web
    app), the page's requests that carry its Origin do reach the target with the key, so the
    page really fires them and the target really records them. Those without an Origin (an
    <img>, a frame, a link) are still refused: the browser does not say which page made them."""
    run = await attack(aiohttp_server, tmp_path, allowed_origin=True)
    with capsys.disabled():
        print(f"\nhostile page, its origin allowed: {run.summary()}")
    arrived = {(a.kind, a.via) for a in run.target.with_key()}
    assert {("fetch-cors-get", via) for via in VIAS} <= arrived, run.summary()
    assert {kind for kind, _ in arrived} <= WITH_ORIGIN, sorted(arrived)
    assert len(arrived) >= len(VIAS) * 4, sorted(arrived)
    page_made = set(KINDS) - WITH_ORIGIN - SPECULATIVE
    without_origin = {(r.kind, r.via, r.note) for r in run.received if r.kind in page_made}
    assert {(kind, via) for kind, via, _ in without_origin} == {
        (kind, via) for kind in page_made for via in VIAS
    }
    assert {note for _, via, note in without_origin if via != "devbox"} == {"cross_site_refused"}
    assert {note for _, via, note in without_origin if via == "devbox"} == {"unmarked_browser_refused"}
    # Speculation rules are refused whoever's page they are on.
    assert {r.note for r in run.received if r.kind in SPECULATIVE} == {"speculative_load_refused"}
