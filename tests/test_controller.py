"""ProxyController driven the way the tray and ``trayproxy serve`` drive it: from another thread.

The controller owns an event loop on a thread of its own; every test here calls it from the
test's thread and checks what a person would notice: the proxy comes and goes on demand as
often as they click, requests in flight are never left hanging, a live target switch does not
break a stream that is already open, a taken port is explained in plain words, and nothing
(thread, socket, client session, task) piles up in a tray app that runs for weeks.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port, wait_until
from upstreams import CLOSES, Seen, dead_port, echo_app, sse_app, ws_echo_app

from desktop.config.model import DEFAULT_ALLOWED_HOSTS, ProxySettings, Secret, Target
from desktop.controller import ListenError, ProxyController, ProxyStatus
from desktop.engine.addresses import HEALTH_PATH

# Sockets the test process may open or drop on its own between two counts (a lazily opened
# resolver or entropy file); a controller leaking one socket per start would show 100.
FD_SLACK = 4
# Time closed sockets and ending threads get to disappear after a stop: closing is immediate,
# but the other side of a loopback connection notices on its own loop.
SETTLE_S = 5.0
# A request that takes this long through a proxy of fast echo targets is hanging.
CLIENT_TIMEOUT_S = 10.0


def local_settings(port: int = 0, *, stop_grace_s: float = 2.0) -> ProxySettings:
    return ProxySettings(hosts=("127.0.0.1",), port=port, stop_grace_s=stop_grace_s)


def count_open_fds() -> int:
    """Open file descriptors of this process (sockets included)."""
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    return len(os.listdir(fd_dir))


# type(obj), not isinstance(obj, ...): isinstance asks obj.__class__, which a library's lazy
# module stand-in may answer by raising (openai's numpy proxy without numpy, before 1.78).
def unclosed_client_sessions() -> list[aiohttp.ClientSession]:
    gc.collect()
    return [obj for obj in gc.get_objects() if issubclass(type(obj), aiohttp.ClientSession) and not obj.closed]


def pending_tasks_on_closed_loops() -> list[asyncio.Task[object]]:
    """Tasks that can never finish: their loop is closed and they are not done."""
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if issubclass(type(obj), asyncio.Task) and obj.get_loop().is_closed() and not obj.done()
    ]


def open_event_loops() -> set[int]:
    gc.collect()
    return {
        id(obj)
        for obj in gc.get_objects()
        if issubclass(type(obj), asyncio.AbstractEventLoop) and not obj.is_closed()
    }


@dataclass(frozen=True)
class Resources:
    """What a leak would show: live threads, open descriptors, unclosed event loops."""

    threads: frozenset[threading.Thread]
    fds: int
    loops: frozenset[int]

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        return cls(frozenset(threading.enumerate()), count_open_fds(), frozenset(open_event_loops()))


def assert_nothing_left_over(before: Resources) -> None:
    """Threads, sockets, loops, sessions and tasks are back to what they were in ``before``."""
    wait_until(lambda: set(threading.enumerate()) <= before.threads, timeout_s=SETTLE_S)
    wait_until(lambda: count_open_fds() <= before.fds + FD_SLACK, timeout_s=SETTLE_S)
    extra_threads = [t.name for t in threading.enumerate() if t not in before.threads]
    assert extra_threads == []
    assert count_open_fds() <= before.fds + FD_SLACK
    assert open_event_loops() <= before.loops
    assert unclosed_client_sessions() == []
    assert pending_tasks_on_closed_loops() == []


def get_json(url: str) -> tuple[int, dict[str, object]]:
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        response = client.get(url)
        return response.status_code, response.json()


def test_start_stop_100_times_leaves_no_thread_socket_session_or_task() -> None:
    """Toggling the proxy from the tray all day must not slowly eat threads or sockets."""
    controller = ProxyController(local_settings(), Target(url=f"http://127.0.0.1:{dead_port()}", name="A"))
    # One round first: imports and process-wide caches (TLS trust store) are not leaks.
    controller.start()
    controller.stop()
    before = Resources.now()

    ports = set()
    for _ in range(100):
        status = controller.start()
        assert status.state == "running"
        ports.add(status.addresses[0][1])
        controller.stop()
        assert controller.status.state == "stopped"

    assert 0 not in ports
    assert_nothing_left_over(before)


def _hammer(port: int, until: threading.Event, worker: int, outcomes: list[tuple[str, str]]) -> None:
    """Send requests to the proxy until told to stop; record how each one ended."""
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        count = 0
        while not until.is_set():
            count += 1
            path = f"/w{worker}/r{count}?q=%2F"
            body = b"x" * (count % 7) * 100
            try:
                response = client.post(f"http://127.0.0.1:{port}{path}", content=body)
            except httpx.TimeoutException as exc:
                outcomes.append(("hang", f"{path}: {exc!r}"))
                continue
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # Refused while stopped, or the connection closed as the proxy stopped: the
                # tool sees a plain network error and can retry.
                outcomes.append(("network error", path))
                time.sleep(0.005)
                continue
            if response.status_code == 200:
                seen = response.json()
                ok = seen["raw_path"] == path and seen["body_size"] == len(body)
                outcomes.append(("ok" if ok else "wrong answer", f"{path}: {response.text[:200]}"))
            elif response.status_code == 503 and "error" in response.json():
                outcomes.append(("refused while stopping", path))
            else:
                outcomes.append(("bad status", f"{path}: {response.status_code} {response.text[:200]}"))


def test_requests_during_start_stop_and_switching_succeed_or_fail_cleanly() -> None:
    """While the tray starts, stops and switches the proxy, a tool's requests either get their
    answer or a plain error at once; none hangs, none gets a wrong answer, nothing piles up."""
    seen_a, seen_b = Seen(), Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen_a)) as server_a, BackgroundServer(echo_app(seen_b)) as server_b:
        target_a = Target(url=server_a.url, name="A")
        target_b = Target(url=server_b.url, name="B")
        before = Resources.now()
        # A short grace keeps the 15 stops quick; requests cut by it must still end cleanly.
        controller = ProxyController(local_settings(port, stop_grace_s=0.5), target_a)
        until = threading.Event()
        outcomes: list[tuple[str, str]] = []
        workers = [
            threading.Thread(target=_hammer, args=(port, until, index, outcomes), name=f"client-{index}")
            for index in range(4)
        ]
        for worker in workers:
            worker.start()
        try:
            for cycle in range(15):
                controller.start()
                time.sleep(0.05)
                controller.set_target(target_b if cycle % 2 == 0 else target_a)
                time.sleep(0.05)
                controller.stop()
                time.sleep(0.01)
        finally:
            until.set()
            for worker in workers:
                worker.join(CLIENT_TIMEOUT_S * 2)
            controller.stop()

        assert [w.name for w in workers if w.is_alive()] == []
        kinds = {kind for kind, _ in outcomes}
        problems = [
            (kind, detail) for kind, detail in outcomes if kind in ("hang", "wrong answer", "bad status")
        ]
        assert problems == []
        assert "ok" in kinds
        assert seen_a.requests
        assert seen_b.requests
        assert_nothing_left_over(before)


def can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def is_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``, asked without connecting where the OS
    allows: a probe connection accepted just as the listener closes is handed to the proxy's
    loop after its stop and leaks there (an asyncio race, not what this test is about)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return can_connect(port)
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: TCP_LISTEN
            return True
    return False


def read_until_closed(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_stop_lets_a_request_whose_body_is_still_arriving_finish() -> None:
    """Quitting while a tool is still uploading a request body: the upload completes and the
    tool gets its answer within the grace period, instead of hanging until the grace runs out
    and then being cut (a stop must not stop reading requests already in progress)."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        controller = ProxyController(local_settings(stop_grace_s=5.0), Target(url=upstream.url, name="A"))
        port = controller.start().addresses[0][1]
        health = f"http://127.0.0.1:{port}{HEALTH_PATH}"
        stopper = threading.Thread(target=controller.stop, name="stopper")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as conn:
                conn.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 10\r\n\r\n12345" % port
                )
                # Our request is open (the health request does not count itself).
                assert wait_until(lambda: get_json(health)[1]["requests_active"] == 1, timeout_s=SETTLE_S)
                stopper.start()
                # The listener closes first; the stop is then under way.
                assert wait_until(lambda: not is_listening(port), timeout_s=SETTLE_S)
                time.sleep(0.2)
                conn.sendall(b"67890")
                answer = read_until_closed(conn)
        finally:
            if stopper.is_alive():
                stopper.join(CLIENT_TIMEOUT_S)
            controller.stop()

    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert [(r["raw_path"], r["body_size"]) for r in seen.requests] == [("/upload", 10)]


def sse_and_ws_app(seen: Seen) -> tuple[web.Application, web.Application]:
    """Target A: SSE at ``/events/sse``, WebSocket echo at ``/socket/ws``; no other paths."""
    app = web.Application()
    ws_app = ws_echo_app()
    app.add_subapp("/events/", sse_app(seen=seen))
    app.add_subapp("/socket/", ws_app)
    return app, ws_app


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = SETTLE_S) -> None:
    """Wait on the running loop until ``predicate`` holds (a target's handler sets it)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def read_sse_events(response: aiohttp.ClientResponse, *, count: int | None = None) -> list[str]:
    """The ``data:`` payloads of ``response``; up to ``count`` of them, or all until EOF."""
    events: list[str] = []
    while count is None or len(events) < count:
        line = await response.content.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events.append(line[6:].decode().strip())
    return events


async def test_switching_target_keeps_open_stream_and_websocket_on_old_target(aiohttp_server) -> None:
    """Switching target in the tray while a model is streaming and a WebSocket is open: both
    carry on with the old target to their end, and the next request goes to the new one."""
    seen_a, seen_b = Seen(), Seen()
    app_a, ws_app_a = sse_and_ws_app(seen_a)
    server_a = await aiohttp_server(app_a)
    server_b = await aiohttp_server(echo_app(seen_b))
    controller = ProxyController(local_settings(), Target(url=str(server_a.make_url("")), name="A"))
    status = controller.start()
    try:
        async with aiohttp.ClientSession() as client, asyncio.timeout(20):
            stream = await client.get(f"{status.local_url}/events/sse?n=10&gap=0.1")
            assert stream.status == 200
            first = await read_sse_events(stream, count=1)
            ws = await client.ws_connect(f"{status.local_url}/socket/ws")
            await ws.send_str("before the switch")
            assert await ws.receive_str() == "before the switch"

            controller.set_target(Target(url=str(server_b.make_url("")), name="B"))

            async with client.get(f"{status.local_url}/v1/models") as response:
                assert response.status == 200
                assert (await response.json())["raw_path"] == "/v1/models"
            assert [r["raw_path"] for r in seen_b.requests] == ["/v1/models"]

            await ws.send_str("after the switch")
            assert await ws.receive_str() == "after the switch"
            await ws.send_bytes(b"\x00binary\xff")
            assert await ws.receive_bytes() == b"\x00binary\xff"
            await ws.close()
            # The target records the close once its handler ends.
            await eventually(lambda: bool(ws_app_a[CLOSES]))

            rest = await read_sse_events(stream)
            stream.release()
        events = first + rest
        assert events[-1] == "[DONE]"
        assert [json.loads(event)["i"] for event in events[:-1]] == list(range(10))
        assert [code for code, _ in ws_app_a[CLOSES]] == [1000]
        assert seen_a.requests == []  # A's echo routes saw nothing: /v1/models went to B
        assert controller.status.target_name == "B"
    finally:
        await asyncio.to_thread(controller.stop)
    assert unclosed_client_sessions() == []


def test_second_controller_on_same_port_says_trayproxy_is_already_running() -> None:
    """Starting a second copy on the same port tells the person a TrayProxy already runs there."""
    first = ProxyController(local_settings(), Target(url="http://127.0.0.1:9", name="first"))
    port = first.start().addresses[0][1]
    try:
        second = ProxyController(local_settings(port), Target(url="http://127.0.0.1:9", name="second"))
        with pytest.raises(ListenError, match="TrayProxy is already running") as raised:
            second.start()
        assert second.status.state == "error"
        assert second.status.error == str(raised.value)
        assert str(port) in str(raised.value)
        # The first copy is unharmed and still answers.
        status, health = get_json(f"http://127.0.0.1:{port}{HEALTH_PATH}")
        assert status == 200
        assert health["target"] == {"name": "first", "url": "http://127.0.0.1:9"}
    finally:
        first.stop()


def test_port_held_by_another_program_is_reported_and_start_works_once_it_is_free() -> None:
    """A port taken by something else is explained as such; once it is freed, Start works,
    and the failed attempt left no thread behind."""
    before = Resources.now()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    controller = ProxyController(local_settings(port), Target(url="http://127.0.0.1:9", name="A"))
    try:
        with pytest.raises(ListenError, match="already in use by another program") as raised:
            controller.start()
        assert "TrayProxy is already running" not in str(raised.value)
        assert controller.status.state == "error"
        assert controller.status.error == str(raised.value)
        assert controller.status.local_url is None
    finally:
        holder.close()

    status = controller.start()
    try:
        assert status.state == "running"
        assert status.error is None
        assert status.addresses == (("127.0.0.1", port),)
    finally:
        controller.stop()
    assert_nothing_left_over(before)


def test_listeners_receive_running_switch_and_stopped_snapshots() -> None:
    """The tray's icon follows the proxy: each change arrives as a snapshot whose local_url
    is the address that actually answers."""
    snapshots: list[ProxyStatus] = []
    controller = ProxyController(local_settings(), Target(url="http://127.0.0.1:9", name="A"))
    controller.add_listener(snapshots.append)
    assert controller.status.state == "stopped"
    assert controller.status.local_url is None

    status = controller.start()
    try:
        port = status.addresses[0][1]
        assert port != 0
        assert status.local_url == f"http://127.0.0.1:{port}"
        code, health = get_json(f"{status.local_url}{HEALTH_PATH}")
        assert code == 200
        assert health["app"] == "trayproxy"
        controller.set_target(Target(url="http://127.0.0.1:10", name="B"))
    finally:
        controller.stop()

    assert [(s.state, s.target_name) for s in snapshots] == [
        ("running", "A"),
        ("running", "B"),
        ("stopped", "B"),
    ]
    assert snapshots[0] is status
    assert snapshots[1].local_url == status.local_url
    assert snapshots[-1].addresses == ()
    assert snapshots[-1].local_url is None
    assert controller.status is snapshots[-1]


def test_listening_beyond_loopback_warns_that_others_can_spend_the_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning comes from start (serve and the tray both start there) for a host beyond
    loopback, and not for loopback alone."""
    target = Target(f"http://127.0.0.1:{dead_port()}")
    with caplog.at_level("WARNING", logger="trayproxy.controller"):
        for hosts in (("127.0.0.1",), ("0.0.0.0",)):
            controller = ProxyController(ProxySettings(hosts=hosts, port=0, stop_grace_s=0.5), target)
            try:
                controller.start()
            finally:
                controller.close(0)
    warnings = [record.getMessage() for record in caplog.records if "other machines" in record.getMessage()]
    assert warnings == ["listening on 0.0.0.0: other machines that can reach it can use the keys this proxy adds"]


def test_an_allowed_host_browsers_do_not_mark_is_warned_of_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """A non-loopback allowed host (the README's devbox.local) gets no Fetch Metadata from
    browsers, so only the User-Agent rule guards it: start says so and points at
    require_token, once per such host, and says nothing when the token is required."""
    target = Target(f"http://127.0.0.1:{dead_port()}")
    with caplog.at_level("WARNING", logger="trayproxy.controller"):
        for require_token in (False, True):
            settings = ProxySettings(
                port=0,
                stop_grace_s=0.5,
                allowed_hosts=(*DEFAULT_ALLOWED_HOSTS, "devbox.local", "app.localhost"),
                require_token=require_token,
                local_token=Secret("tp-local-test-token") if require_token else None,
            )
            controller = ProxyController(settings, target)
            try:
                controller.start()
            finally:
                controller.close(0)
    warnings = [record.getMessage() for record in caplog.records if "allowed host" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("allowed host devbox.local: browsers mark no request to it")
    assert "require_token = true" in warnings[0]
