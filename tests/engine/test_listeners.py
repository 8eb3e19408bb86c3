"""Listeners.apply, driven with plans directly: no controller, no thread, the test's loop.

What a person notices when the config file's listen settings change under running tools: a
new port serves at once and the old one stops accepting while its open requests finish; a
taken port changes nothing until it is free; a target on a port of its own comes and goes with
its ``port`` line; swapped ports trade places without an error; a new target, Host allowlist or
local token applies from the next request, open streams carrying on. Every upstream is a real
aiohttp server that says its name, so a request through a listener shows which target answered.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from background import free_port
from listen_helpers import can_bind, is_listening
from netservers import LoopbackResolver

from desktop.config.model import Listener, ProxySettings, Secret, Target
from desktop.engine.addresses import ListenError
from desktop.engine.listeners import Listeners, Report

# Deadlock guard on every wait, not a timing claim.
WAIT_S = 10.0
# Long enough for the streams a test holds open across a move; a test that fails with one
# open waits this long at teardown, no longer.
GRACE_S = 3.0
# A while for stop() to return if it did not wait for a retiring listener.
SETTLE_S = 0.3
TOKEN = "tp-local-Zq3v8mKx0fP1s9TbW2nYcR7uLd4hGe6AjS5oVi-_abc"
# A name of this machine browsers send Fetch Metadata to, outside the default Host allowlist.
LAN_HOST = "llm.localhost"
# 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine; only bound, never sent to.
NOT_OURS = "192.0.2.1"
BASE = ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=GRACE_S)

RELEASE = web.AppKey("release", asyncio.Event)


def named_app(name: str) -> web.Application:
    """``/stream`` sends ``NAME begins``, then ``NAME ends`` once ``app[RELEASE]`` is set;
    every other path answers ``NAME``."""

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(f"{name} begins\n".encode())
        await request.app[RELEASE].wait()
        await response.write(f"{name} ends\n".encode())
        await response.write_eof()
        return response

    async def who(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/stream", stream)
    app.router.add_get("/{tail:.*}", who)
    return app


@dataclass
class Upstream:
    target: Target
    release: asyncio.Event


@pytest.fixture
async def upstreams(aiohttp_server: Any) -> dict[str, Upstream]:
    """Targets ``a`` and ``b``, each a real server answering with its name."""
    made = {}
    for name in ("a", "b"):
        app = named_app(name)
        server = await aiohttp_server(app)
        made[name] = Upstream(Target(url=str(server.make_url("")), name=name), app[RELEASE])
    return made


@pytest.fixture
async def listeners(upstreams: dict[str, Upstream]) -> AsyncIterator[Listeners]:
    made = Listeners()
    yield made
    for upstream in upstreams.values():
        upstream.release.set()  # streams a failed test left open end now
    await made.stop(grace_s=0.5)


def main_at(target: Target, port: int = 0, **settings: Any) -> Listener:
    return Listener(replace(BASE, port=port, **settings), target)


def own_at(name: str, target: Target, port: int, **settings: Any) -> Listener:
    return Listener(replace(BASE, port=port, **settings), target, own=name)


async def who(port: int, host: str = "127.0.0.1", **headers: str) -> tuple[int, str]:
    """The status and body of a request through ``host:port``: the target's name when forwarded."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}/who", headers=headers) as response,
    ):
        return response.status, await response.text()


class OpenStream:
    """``GET /stream`` through a listener, its first line read: in flight until released."""

    def __init__(
        self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse, first: bytes
    ) -> None:
        self._session, self._response, self.first = session, response, first

    async def finish(self) -> bytes:
        """Everything the stream sent, once the target was released."""
        rest = await asyncio.wait_for(self._response.content.read(), WAIT_S)
        return self.first + rest

    async def close(self) -> None:
        self._response.release()
        await self._session.close()


@pytest.fixture
async def open_stream() -> AsyncIterator[Callable[[int], Awaitable[OpenStream]]]:
    opened: list[OpenStream] = []

    async def go(port: int) -> OpenStream:
        session = aiohttp.ClientSession()
        response = await session.get(f"http://127.0.0.1:{port}/stream")
        first = await asyncio.wait_for(response.content.readline(), WAIT_S)
        opened.append(OpenStream(session, response, first))
        return opened[-1]

    yield go
    for stream in opened:
        await stream.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@asynccontextmanager
async def foreign(*ports: int) -> AsyncIterator[None]:
    """Another program's sockets on 127.0.0.1 at ``ports`` (it answers nothing TrayProxy's)."""
    servers = [await asyncio.start_server(_hang_up, "127.0.0.1", port) for port in ports]
    try:
        yield
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
def said(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The INFO lines the listeners logged since the last call."""
    caplog.set_level(logging.INFO, logger="trayproxy")

    def lines() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.name == "trayproxy.listeners"]
        caplog.clear()
        return found

    return lines


def where(report: Report) -> dict[str | None, tuple[tuple[str, int], ...]]:
    return {own: outcome.addresses for own, outcome in report.outcomes.items()}


def errors(report: Report) -> dict[str | None, str]:
    return {own: str(outcome.error) for own, outcome in report.outcomes.items() if outcome.error is not None}


def port_of(listeners: Listeners, own: str | None = None) -> int:
    service = listeners.service(own)
    assert service is not None
    return service.port


async def test_first_apply_starts_the_main_listener_and_an_added_target_port_serves_beside_it(
    listeners: Listeners, upstreams: dict[str, Upstream], said: Callable[[], list[str]]
) -> None:
    """The main port serves the chosen target; a target given a port of its own is served
    there too, and adding it leaves the main listener as it was."""
    a, b = upstreams["a"].target, upstreams["b"].target
    report = await listeners.apply([main_at(a)])
    assert listeners.running
    main = listeners.service(None)
    assert main is not None
    assert where(report) == {None: (("127.0.0.1", main.port),)}
    assert (report.main.opened, report.has_errors) == (True, False)
    assert await who(main.port) == (200, "a")

    own = free_port()
    report = await listeners.apply([main_at(a), own_at("b", b, own)])
    assert listeners.service(None) is main
    assert where(report) == {None: (("127.0.0.1", main.port),), "b": (("127.0.0.1", own),)}
    assert (report.main.opened, report.outcomes["b"].opened) == (False, True)
    assert await who(own) == (200, "b")
    assert await who(main.port) == (200, "a")
    assert said() == [f"target b is also served on 127.0.0.1:{own}"]


async def test_a_main_listener_that_cannot_start_starts_nothing_else(
    listeners: Listeners, upstreams: dict[str, Upstream]
) -> None:
    """The main port taken at start: the report says why, no target's own port opens; once
    the port is free, the same plan starts both."""
    a, b = upstreams["a"].target, upstreams["b"].target
    taken, own = free_port(), free_port()
    plan = [main_at(a, taken), own_at("b", b, own)]
    async with foreign(taken):
        report = await listeners.apply(plan)
        assert not listeners.running
        error = report.main.error
        assert isinstance(error, ListenError)
        assert error.port_taken
        assert where(report) == {None: (), "b": ()}
        assert not is_listening(own)
    report = await listeners.apply(plan)
    assert errors(report) == {}
    assert await who(taken) == (200, "a")
    assert await who(own) == (200, "b")


async def test_moving_the_main_port_opens_the_new_one_and_an_open_stream_finishes_on_the_old(
    listeners: Listeners,
    upstreams: dict[str, Upstream],
    open_stream: Callable[[int], Awaitable[OpenStream]],
    said: Callable[[], list[str]],
) -> None:
    """The new port answers as soon as apply returns; the old one refuses new connections
    while the request open on it gets its whole answer."""
    a = upstreams["a"].target
    await listeners.apply([main_at(a)])
    old = port_of(listeners)
    stream = await open_stream(old)
    said()

    new = free_port()
    report = await listeners.apply([main_at(a, new)])
    assert errors(report) == {}
    assert report.main.moved_from == (("127.0.0.1", old),)
    assert report.main.addresses == (("127.0.0.1", new),)
    assert await who(new) == (200, "a")
    assert not is_listening(old)
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"
    assert said() == [
        f"the proxy now listens on 127.0.0.1:{new}; requests open on 127.0.0.1:{old} finish there"
        " (open WebSockets are told 1001 to reconnect)"
    ]


async def test_a_target_port_no_longer_wanted_or_on_the_main_port_is_retired(
    listeners: Listeners, upstreams: dict[str, Upstream], said: Callable[[], list[str]]
) -> None:
    """Removing a target's ``port`` closes its listener; giving it the main listener's port
    (``--port`` overriding the file) closes it too and says why."""
    a, b = upstreams["a"].target, upstreams["b"].target
    main, own = free_port(), free_port()
    await listeners.apply([main_at(a, main), own_at("b", b, own)])
    said()

    report = await listeners.apply([main_at(a, main)])
    assert report.retired == (("b", own),)
    assert listeners.service("b") is None
    assert not is_listening(own)
    assert said() == [f"target b is no longer served on port {own}"]

    await listeners.apply([main_at(a, main), own_at("b", b, own)])
    report = await listeners.apply([main_at(a, main), own_at("b", b, main)])
    assert report.retired == (("b", own),)
    assert errors(report) == {"b": f"port {main} is the main listener's port"}
    assert where(report) == {None: (("127.0.0.1", main),), "b": ()}
    assert not is_listening(own)
    assert await who(main) == (200, "a")


async def test_a_taken_port_keeps_the_old_listener_serving_until_a_reapply_finds_it_free(
    listeners: Listeners, upstreams: dict[str, Upstream], said: Callable[[], list[str]]
) -> None:
    """Moves to ports another program holds (with the targets swapped in the same edit), and
    a new target port it holds: each outcome says why and where it still listens; the tools
    keep their old ports, which serve the new targets; applying the same plan again while the
    ports are held changes nothing, and once they are free it moves."""
    a, b = upstreams["a"].target, upstreams["b"].target
    await listeners.apply([main_at(a), own_at("b", b, free_port())])
    old_main, old_own = port_of(listeners), port_of(listeners, "b")
    services = (listeners.service(None), listeners.service("b"))
    new_main, new_own, third = free_port(), free_port(), free_port()
    plan = [main_at(b, new_main), own_at("b", a, new_own), own_at("c", a, third)]
    said()
    async with foreign(new_main, new_own, third):
        for _ in range(2):
            report = await listeners.apply(plan)
            assert where(report) == {
                None: (("127.0.0.1", old_main),),
                "b": (("127.0.0.1", old_own),),
                "c": (),
            }
            for outcome in report.outcomes.values():
                assert isinstance(outcome.error, ListenError)
                assert outcome.error.port_taken
            assert [o.move_failed for o in report.outcomes.values()] == [True, True, False]
            assert not report.main_lost
            assert (listeners.service(None), listeners.service("b")) == services
            assert await who(old_main) == (200, "b")
            assert await who(old_own) == (200, "a")
            assert said() == []
    report = await listeners.apply(plan)
    assert errors(report) == {}
    assert where(report) == {
        None: (("127.0.0.1", new_main),),
        "b": (("127.0.0.1", new_own),),
        "c": (("127.0.0.1", third),),
    }
    assert report.outcomes["b"].moved_from == (("127.0.0.1", old_own),)
    assert [await who(port) for port in (new_main, new_own, third)] == [(200, "b"), (200, "a"), (200, "a")]
    assert not is_listening(old_main)
    assert not is_listening(old_own)


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="this OS binds 127.0.0.1 only")
async def test_other_hosts_on_the_same_port_take_over_and_an_open_stream_finishes(
    listeners: Listeners, upstreams: dict[str, Upstream], open_stream: Callable[[int], Awaitable[OpenStream]]
) -> None:
    """127.0.0.2 cannot be bound beside 127.0.0.1 on one port: the old listener lets go of its
    address for one bind, and a request open on it still gets its answer."""
    a = upstreams["a"].target
    port = free_port()
    await listeners.apply([main_at(a, port)])
    stream = await open_stream(port)
    report = await listeners.apply([main_at(a, port, hosts=("127.0.0.2",))])
    assert errors(report) == {}
    assert report.main.addresses == (("127.0.0.2", port),)
    assert await who(port, "127.0.0.2", Host="localhost") == (200, "a")  # 127.0.0.2 is not allowed
    assert not is_listening(port, "127.0.0.1")
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"


async def test_hosts_that_cannot_be_had_on_the_same_port_give_the_old_address_back(
    listeners: Listeners, upstreams: dict[str, Upstream], open_stream: Callable[[int], Awaitable[OpenStream]]
) -> None:
    """A host that is not this machine's: the listener takes its old address back and keeps
    serving, a request open on it finishes, and the report says why."""
    a = upstreams["a"].target
    port = free_port()
    await listeners.apply([main_at(a, port)])
    stream = await open_stream(port)
    report = await listeners.apply([main_at(a, port, hosts=(NOT_OURS,))])
    assert errors(report) == {None: f"{NOT_OURS} is not an address of this machine"}
    assert report.main.move_failed
    assert report.main.wanted_addresses == ((NOT_OURS, port),)
    assert report.main.addresses == (("127.0.0.1", port),)
    assert not report.main_lost
    assert listeners.running
    assert await who(port) == (200, "a")
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"


async def test_a_main_listener_whose_old_address_is_taken_meanwhile_is_reported_lost(
    upstreams: dict[str, Upstream],
) -> None:
    """Another program grabs the port in the moment the listener let go of it for a host
    change that then fails: nothing can serve the chosen target, and the report says so."""
    port = free_port()
    grabbed: list[asyncio.Task[asyncio.Server]] = []

    def resolver_factory() -> LoopbackResolver:
        # Called as each service is made: the first start, the new hosts, then the take-back.
        if len(calls) == 2:
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            grabbed.append(asyncio.get_running_loop().create_task(asyncio.start_server(_hang_up, sock=sock)))
        calls.append(None)
        return LoopbackResolver()

    calls: list[None] = []
    listeners = Listeners(resolver_factory=resolver_factory)
    a = upstreams["a"].target
    try:
        await listeners.apply([main_at(a, port)])
        report = await listeners.apply([main_at(a, port, hosts=(NOT_OURS,))])
        assert report.main_lost
        assert not listeners.running
        assert report.main.addresses == ()
        assert str(report.main.error) == f"{NOT_OURS} is not an address of this machine"
    finally:
        await listeners.stop(grace_s=0.5)
        for task in grabbed:
            server = await task
            server.close()
            await server.wait_closed()
    assert len(calls) == 3


async def test_swapped_ports_trade_places_without_an_error(
    listeners: Listeners, upstreams: dict[str, Upstream], said: Callable[[], list[str]]
) -> None:
    """The main port and a target's swapped in one edit: the target's listener frees the port
    the main one wants, so neither finds its new port taken by the other."""
    a, b = upstreams["a"].target, upstreams["b"].target
    first, second = free_port(), free_port()
    await listeners.apply([main_at(a, first), own_at("b", b, second)])
    said()
    report = await listeners.apply([main_at(a, second), own_at("b", b, first)])
    assert errors(report) == {}
    assert where(report) == {None: (("127.0.0.1", second),), "b": (("127.0.0.1", first),)}
    assert await who(second) == (200, "a")
    assert await who(first) == (200, "b")
    assert said()[0] == f"target b leaves port {second} for the proxy"


async def test_a_new_target_serves_new_requests_while_an_open_stream_finishes_on_the_old(
    listeners: Listeners, upstreams: dict[str, Upstream], open_stream: Callable[[int], Awaitable[OpenStream]]
) -> None:
    """Choosing another target (and giving a target's own port another one) switches where
    new requests go on the same listeners; the stream already open ends from its target."""
    a, b = upstreams["a"].target, upstreams["b"].target
    own = free_port()
    await listeners.apply([main_at(a), own_at("own", b, own)])
    main = listeners.service(None)
    assert main is not None
    stream = await open_stream(main.port)
    report = await listeners.apply([main_at(b), own_at("own", a, own)])
    assert errors(report) == {}
    assert listeners.service(None) is main
    assert report.main.moved_from == ()
    assert await who(main.port) == (200, "b")
    assert await who(own) == (200, "a")
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"


async def test_allowlist_and_token_changes_reach_every_listener_without_a_restart(
    listeners: Listeners, upstreams: dict[str, Upstream]
) -> None:
    """A Host added to allowed_hosts is accepted, and require_token asks for the token, on the
    main port and a target's own alike, by the same listeners."""
    a, b = upstreams["a"].target, upstreams["b"].target
    own = free_port()

    def plan(**settings: Any) -> list[Listener]:
        return [main_at(a, **settings), own_at("b", b, own, **settings)]

    await listeners.apply(plan())
    services = (listeners.service(None), listeners.service("b"))
    ports = (port_of(listeners), own)
    for port in ports:
        assert (await who(port, Host=LAN_HOST))[0] == 403

    allowed = (*BASE.allowed_hosts, LAN_HOST)
    await listeners.apply(plan(allowed_hosts=allowed))
    assert [await who(port, Host=LAN_HOST) for port in ports] == [(200, "a"), (200, "b")]

    await listeners.apply(plan(allowed_hosts=allowed, require_token=True, local_token=Secret(TOKEN)))
    for port in ports:
        assert (await who(port))[0] == 401
    assert [await who(port, Authorization=f"Bearer {TOKEN}") for port in ports] == [(200, "a"), (200, "b")]
    assert (listeners.service(None), listeners.service("b")) == services


async def test_applying_the_same_plan_again_touches_nothing(
    listeners: Listeners,
    upstreams: dict[str, Upstream],
    open_stream: Callable[[int], Awaitable[OpenStream]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller applies its plan again every few seconds while something failed: what runs
    as wanted is left alone (same services, no log line, open streams untouched)."""
    a, b = upstreams["a"].target, upstreams["b"].target
    plan = [main_at(a, free_port()), own_at("b", b, free_port())]
    first = await listeners.apply(plan)
    services = (listeners.service(None), listeners.service("b"))
    stream = await open_stream(port_of(listeners))
    caplog.set_level(logging.DEBUG, logger="trayproxy")
    caplog.clear()
    again = await listeners.apply(plan)
    assert (listeners.service(None), listeners.service("b")) == services
    assert where(again) == where(first)
    assert [(o.opened, o.moved_from, o.error) for o in again.outcomes.values()] == [(False, (), None)] * 2
    assert again.retired == ()
    assert [r.getMessage() for r in caplog.records] == []
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"


async def test_stop_waits_for_a_listener_retiring_after_a_move(
    listeners: Listeners, upstreams: dict[str, Upstream], open_stream: Callable[[int], Awaitable[OpenStream]]
) -> None:
    """Stop (quitting the app) lets the request still open on a moved listener's old address
    finish, and returns only once it has: nothing is left running behind it."""
    a = upstreams["a"].target
    await listeners.apply([main_at(a)])
    retiring = listeners.service(None)
    assert retiring is not None
    stream = await open_stream(retiring.port)
    await listeners.apply([main_at(a, free_port())])
    stopping = asyncio.create_task(listeners.stop(grace_s=0.5))
    await asyncio.sleep(SETTLE_S)
    assert not stopping.done()
    assert not listeners.running
    upstreams["a"].release.set()
    await asyncio.wait_for(stopping, WAIT_S)
    assert await stream.finish() == b"a begins\na ends\n"
    assert not retiring.running


@pytest.mark.parametrize(
    "plan",
    [[], ["own"], ["main", "main"], ["main", "own", "own"]],
    ids=["empty", "no-main", "two-mains", "a-target-twice"],
)
async def test_a_plan_must_start_with_its_one_main_listener(plan: list[str]) -> None:
    target = Target(url="http://127.0.0.1:9", name="a")
    wanted = [own_at("b", target, 9) if kind == "own" else main_at(target) for kind in plan]
    with pytest.raises(ValueError, match="a plan"):
        await Listeners().apply(wanted)


async def test_a_retiring_listener_takes_a_later_edit_on_its_kept_alive_connections(
    listeners: Listeners, upstreams: dict[str, Upstream], open_stream: Callable[[int], Awaitable[OpenStream]]
) -> None:
    """Found by the attacker trial: after a move, the old listener still answers its kept-alive
    connections while a request open on it finishes; an edit made in that window (the local
    token turned on) must reach those connections too, not only the new listener."""
    a = upstreams["a"].target
    await listeners.apply([main_at(a)])
    old = port_of(listeners)
    stream = await open_stream(old)  # keeps the old listener retiring, not stopped
    async with aiohttp.ClientSession() as kept:
        async with kept.get(f"http://127.0.0.1:{old}/who") as response:  # the connection stays open
            assert (response.status, await response.text()) == (200, "a")
        await listeners.apply([main_at(a, free_port())])
        await listeners.apply([main_at(a, free_port(), require_token=True, local_token=Secret(TOKEN))])
        async with kept.get(f"http://127.0.0.1:{old}/who") as response:
            assert response.status == 401
            assert await response.text() != "a"
    upstreams["a"].release.set()
    assert await stream.finish() == b"a begins\na ends\n"


async def test_a_move_that_also_switches_the_target_says_so(
    listeners: Listeners, upstreams: dict[str, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the new-user trial: one save that moves the main port and picks another target
    logged the move but not the switch, which a switch in place logs."""
    a, b = upstreams["a"].target, upstreams["b"].target
    await listeners.apply([main_at(a)])
    caplog.set_level(logging.INFO, logger="trayproxy")
    new = free_port()
    await listeners.apply([main_at(b, new)])
    assert await who(new) == (200, "b")
    assert "target is now b" in [record.getMessage() for record in caplog.records]
