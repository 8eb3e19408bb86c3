"""Listen addresses and targets on ports of their own, edited in the config file while tools
use the proxy, with real servers and real sockets.

A person changes ``[listen] port`` (or the hosts): the proxy moves there without a Stop/Start,
a request still open on the old address finishes there, and the old address then closes. When
the new port is taken, nothing changes for the tools: the old address keeps serving and the
status and the log say which port and which program holds it. A target given a port of its own
(``port = 8001``) is served there beside the chosen target, is not touched by choosing another
target, moves when its port is edited and closes when the port is removed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
import pytest
from background import SLOW_STARTED, BackgroundServer, free_port, slow_app, wait_until
from listen_helpers import PortHolder, can_bind, is_listening, proxy_answers
from upstreams import Seen, echo_app

from desktop.controller import PORT_RETRY_S, ConfigBinding, ListenError, ProxyController, TargetPort
from desktop.platforms.ports import port_holder

# The watcher looks once a second; a reload, a bind and a loaded CI machine fit well inside this.
FOLLOW_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0
# How long the request held open across a move takes at the target.
SLOW_REQUEST_S = 1.5


def start_following(
    made: list[ProxyController], path: Path, *, port_retry_s: float = PORT_RETRY_S, start: bool = True
) -> ProxyController:
    controller = ProxyController.from_config(ConfigBinding(path, port_retry_s=port_retry_s), port_holder=port_holder)
    made.append(controller)
    if start:
        controller.start()
    return controller


def config_text(
    targets: dict[str, str],
    *,
    port: int,
    hosts: tuple[str, ...] = ("127.0.0.1",),
    active: str | None = None,
    own_ports: dict[str, int] | None = None,
) -> str:
    """A config listening on ``hosts`` at ``port``, with ``targets`` (name -> url), some of them
    on ports of their own."""
    own_ports = own_ports or {}
    tables = "".join(
        f'\n[targets.{name}]\nurl = "{url}"\n' + (f"port = {own_ports[name]}\n" if name in own_ports else "")
        for name, url in targets.items()
    )
    listed = ", ".join(f'"{host}"' for host in hosts)
    # 127.0.0.2 is this machine too (Linux answers the whole of 127.0.0.0/8).
    security = '[security]\nallowed_hosts = ["127.0.0.2"]\n'
    return f'active = "{active or next(iter(targets))}"\n\n[listen]\nhosts = [{listed}]\nport = {port}\n{security}{tables}'


def get(port: int, path: str, host: str = "127.0.0.1") -> httpx.Response:
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        return client.get(f"http://{host}:{port}{path}")


def answers(port: int, host: str = "127.0.0.1") -> bool:
    return proxy_answers(port, host, timeout_s=CLIENT_TIMEOUT_S)


def paths(seen: Seen) -> list[object]:
    return [request["raw_path"] for request in seen.requests]


class SlowRequest:
    """A request to ``/slow`` through ``host:port`` in a thread, in flight once started."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), name="slow-request")
        self._thread.start()

    def _run(self, host: str, port: int) -> None:
        try:
            self.response = get(port, f"/slow?s={SLOW_REQUEST_S}", host)
        except BaseException as exc:
            self.error = exc

    def result(self) -> httpx.Response:
        self._thread.join(CLIENT_TIMEOUT_S * 2)
        assert self.error is None, repr(self.error)
        assert self.response is not None
        return self.response


def test_editing_the_port_moves_the_listener_and_an_open_request_finishes_on_the_old_one(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Saving a new port: within a few seconds the proxy answers there, without a Stop/Start;
    a request in flight on the old port gets its answer, then the old port closes."""
    old_port, new_port = free_port(), free_port()
    with BackgroundServer(slow_app()) as target:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"slow": target.url}, port=old_port))
        controller = start_following(follow, path)
        assert controller.status.addresses == (("127.0.0.1", old_port),)
        slow = SlowRequest(old_port)
        assert target.app[SLOW_STARTED].wait(CLIENT_TIMEOUT_S)

        path.write_text(config_text({"slow": target.url}, port=new_port))
        assert wait_until(
            lambda: controller.status.addresses == (("127.0.0.1", new_port),), timeout_s=FOLLOW_TIMEOUT_S
        )
        assert answers(new_port)
        assert not is_listening(old_port)  # no new connections there, while the request runs
        response = slow.result()
        assert (response.status_code, response.text) == (200, f"slept {SLOW_REQUEST_S:g}")
        assert get(new_port, "/after").text == "fast"
        status = controller.status
    assert status.state == "running"
    assert status.error is None
    assert status.local_url == f"http://127.0.0.1:{new_port}"


@pytest.mark.parametrize("moved_by", ["reload", "retry"])
def test_a_taken_new_port_keeps_the_old_one_serving_and_names_the_program_holding_it(
    tmp_path: Path,
    follow: list[ProxyController],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    moved_by: str,
) -> None:
    """The new port is held by another program: the tools notice nothing, the status (what
    the tray shows) and the log name the port and the program's pid (once, not at every retry);
    once the program is gone, Reload config moves the listener and the message clears, and so
    does waiting a few seconds."""
    port_retry_s = 0.3 if moved_by == "retry" else 3600.0
    old_port, new_port = free_port(), free_port()
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as target, PortHolder(new_port) as holder:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"echo": target.url}, port=old_port))
        controller = start_following(follow, path, port_retry_s=port_retry_s)

        path.write_text(config_text({"echo": target.url}, port=new_port))
        assert wait_until(lambda: controller.status.error is not None, timeout_s=FOLLOW_TIMEOUT_S)
        error = controller.status.error or ""
        assert error.startswith(f"could not move to 127.0.0.1:{new_port}: Port {new_port} on 127.0.0.1")
        assert "already in use by another program; choose another port — held by python" in error
        assert f"(pid {holder.pid})" in error
        assert error.endswith(f"; still listening on 127.0.0.1:{old_port}")
        assert controller.status.problem == error
        assert controller.status.state == "running"
        assert controller.status.addresses == (("127.0.0.1", old_port),)
        assert any(f"(pid {holder.pid})" in record.getMessage() for record in caplog.records)
        assert get(old_port, "/still-here").status_code == 200
        threading.Event().wait(1.0)  # retries while the port is still held
        assert controller.status.addresses == (("127.0.0.1", old_port),)

        holder.close()
        if moved_by == "reload":
            assert controller.reload_config()
        else:
            assert wait_until(lambda: controller.status.error is None, timeout_s=FOLLOW_TIMEOUT_S)
        status = controller.status
        assert status.error is None
        assert status.problem is None
        assert status.addresses == (("127.0.0.1", new_port),)
        assert get(new_port, "/moved").status_code == 200
    assert paths(seen) == ["/still-here", "/moved"]
    said = [r for r in caplog.records if f"could not move to 127.0.0.1:{new_port}" in r.getMessage()]
    assert len(said) == 1


def test_going_back_to_the_old_port_after_a_failed_move_clears_the_message(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    old_port, new_port = free_port(), free_port()
    with PortHolder(new_port):
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": "http://127.0.0.1:9"}, port=old_port))
        controller = start_following(follow, path)
        path.write_text(config_text({"a": "http://127.0.0.1:9"}, port=new_port))
        assert wait_until(lambda: controller.status.error is not None, timeout_s=FOLLOW_TIMEOUT_S)
        path.write_text(config_text({"a": "http://127.0.0.1:9"}, port=old_port) + "\n# back\n")
        assert wait_until(lambda: controller.status.error is None, timeout_s=FOLLOW_TIMEOUT_S)
    assert controller.status.addresses == (("127.0.0.1", old_port),)
    assert answers(old_port)


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="this OS binds 127.0.0.1 only")
def test_new_hosts_on_the_same_port_take_over_and_an_open_request_finishes(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Other hosts on the same port cannot be bound beside the old listener; it lets go of
    its address for the time of one bind, and a request in flight on it still finishes."""
    port = free_port()
    with BackgroundServer(slow_app()) as target:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"slow": target.url}, port=port))
        controller = start_following(follow, path)
        slow = SlowRequest(port)
        assert target.app[SLOW_STARTED].wait(CLIENT_TIMEOUT_S)

        path.write_text(config_text({"slow": target.url}, port=port, hosts=("127.0.0.2",)))
        assert wait_until(
            lambda: controller.status.addresses == (("127.0.0.2", port),), timeout_s=FOLLOW_TIMEOUT_S
        )
        assert answers(port, "127.0.0.2")
        assert not is_listening(port, "127.0.0.1")
        response = slow.result()
        assert (response.status_code, response.text) == (200, f"slept {SLOW_REQUEST_S:g}")
    assert controller.status.error is None


def test_hosts_that_cannot_be_had_give_the_old_address_back(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A host that is not this machine's (a typo, a VPN address that is down): the listener
    takes its old address back and keeps serving, and the status says why."""
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(config_text({"a": "http://127.0.0.1:9"}, port=port))
    controller = start_following(follow, path)
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine; only bound, never sent to.
    path.write_text(config_text({"a": "http://127.0.0.1:9"}, port=port, hosts=("192.0.2.1",)))
    assert wait_until(lambda: controller.status.error is not None, timeout_s=FOLLOW_TIMEOUT_S)
    assert controller.status.error == (
        f"could not move to 192.0.2.1:{port}: 192.0.2.1 is not an address of this machine;"
        f" still listening on 127.0.0.1:{port}"
    )
    assert controller.status.state == "running"
    assert controller.status.addresses == (("127.0.0.1", port),)
    assert answers(port)


def test_a_target_on_a_port_of_its_own_serves_beside_the_chosen_one_moves_and_closes(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Two tools, two targets: the chosen target on the main port, another on its own port.
    Choosing a third target leaves the own port alone; editing its port moves it; removing
    the port closes it; Stop and Start close and reopen it."""
    seen_a, seen_b, seen_c = Seen(), Seen(), Seen()
    main, own, moved = free_port(), free_port(), free_port()
    with (
        BackgroundServer(echo_app(seen_a)) as a,
        BackgroundServer(echo_app(seen_b)) as b,
        BackgroundServer(echo_app(seen_c)) as c,
    ):
        targets = {"a": a.url, "b": b.url, "c": c.url}
        path = tmp_path / "config.toml"
        path.write_text(config_text(targets, port=main, own_ports={"b": own}))
        controller = start_following(follow, path)
        assert controller.status.target_ports == (
            TargetPort(name="b", target_url=b.url, port=own, addresses=(("127.0.0.1", own),)),
        )
        assert controller.status.target_ports[0].local_url == f"http://127.0.0.1:{own}"
        assert get(main, "/main-1").status_code == 200
        assert get(own, "/own-1").status_code == 200

        controller.choose_target("c")
        assert get(main, "/main-2").status_code == 200
        assert get(own, "/own-2").status_code == 200
        assert controller.status.target_ports[0].addresses == (("127.0.0.1", own),)

        controller.stop()
        assert not is_listening(own)
        assert controller.status.target_ports == (TargetPort(name="b", target_url=b.url, port=own),)
        controller.start()
        assert get(own, "/own-3").status_code == 200

        path.write_text(config_text(targets, port=main, active="c", own_ports={"b": moved}))
        assert wait_until(
            lambda: controller.status.target_ports[0].addresses == (("127.0.0.1", moved),),
            timeout_s=FOLLOW_TIMEOUT_S,
        )
        assert wait_until(lambda: not is_listening(own), timeout_s=FOLLOW_TIMEOUT_S)
        assert get(moved, "/own-4").status_code == 200

        path.write_text(config_text(targets, port=main, active="c"))
        assert wait_until(lambda: controller.status.target_ports == (), timeout_s=FOLLOW_TIMEOUT_S)
        assert wait_until(lambda: not is_listening(moved), timeout_s=FOLLOW_TIMEOUT_S)
        assert get(main, "/main-3").status_code == 200
    assert paths(seen_a) == ["/main-1"]
    assert paths(seen_b) == ["/own-1", "/own-2", "/own-3", "/own-4"]
    assert paths(seen_c) == ["/main-2", "/main-3"]


@pytest.mark.parametrize("reopened_by", ["reload", "retry"])
def test_a_taken_target_port_is_reported_while_the_main_port_serves_and_opens_once_free(
    tmp_path: Path,
    follow: list[ProxyController],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    reopened_by: str,
) -> None:
    """Its own port held by another program: the proxy still starts on the main port, the
    status names the target, the port and the program, and the log says so once (not at every
    retry). Once the program lets go, Reload config opens it; so does waiting a few seconds."""
    port_retry_s = 0.3 if reopened_by == "retry" else 3600.0
    seen_b = Seen()
    main, own = free_port(), free_port()
    caplog.set_level(logging.INFO)
    with BackgroundServer(echo_app(seen_b)) as b, PortHolder(own) as holder:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": "http://127.0.0.1:9", "b": b.url}, port=main, own_ports={"b": own}))
        controller = start_following(follow, path, port_retry_s=port_retry_s)
        assert controller.status.state == "running"
        [entry] = controller.status.target_ports
        assert entry.addresses == ()
        assert entry.error is not None
        assert entry.error.startswith(f"Port {own} on 127.0.0.1 is already in use by another program")
        assert f"(pid {holder.pid})" in entry.error
        assert controller.status.problem == f"b on port {own}: {entry.error}"
        assert answers(main)
        threading.Event().wait(1.5)  # several retries while the port is still held
        assert controller.status.target_ports[0].addresses == ()

        holder.close()
        if reopened_by == "reload":
            assert controller.reload_config()
        else:
            assert wait_until(lambda: controller.status.target_ports[0].error is None, timeout_s=FOLLOW_TIMEOUT_S)
        [entry] = controller.status.target_ports
        assert entry.error is None
        assert controller.status.problem is None
        assert get(own, "/own").status_code == 200
    said = [r for r in caplog.records if f"target b is not served on port {own}" in r.getMessage()]
    assert len(said) == 1
    assert paths(seen_b) == ["/own"]


def test_moving_back_and_forth_leaves_no_socket_thread_or_task_behind(tmp_path: Path) -> None:
    """A tray app runs for weeks: each move retires a listener, and none may leak a socket,
    a task or a client session, with a target on its own port moving along."""
    from test_controller import Resources, assert_nothing_left_over

    ports = [free_port() for _ in range(4)]
    path = tmp_path / "config.toml"
    path.write_text(config_text({"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9"}, port=ports[0]))
    controller = ProxyController.from_config(ConfigBinding(path, watch=False), port_holder=port_holder)
    controller.start()
    controller.stop()
    before = Resources.now()
    controller.start()
    try:
        for round_ in range(10):
            main, own = (ports[0], ports[1]) if round_ % 2 else (ports[2], ports[3])
            path.write_text(
                config_text({"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9"}, port=main, own_ports={"b": own})
            )
            assert controller.reload_config()
            assert controller.status.addresses == (("127.0.0.1", main),)
            assert controller.status.target_ports[0].addresses == (("127.0.0.1", own),)
            assert answers(main)
            assert answers(own)
    finally:
        controller.close(grace_s=0.5)
    assert_nothing_left_over(before)


def test_ports_swapped_in_one_edit_trade_places_without_an_error(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Swapping the main port with a target's, or two targets' ports, in one save: each
    listener frees the port the other wants, so nobody finds its new port taken by us."""
    seen_a, seen_b, seen_c = Seen(), Seen(), Seen()
    first, second, third = free_port(), free_port(), free_port()
    with (
        BackgroundServer(echo_app(seen_a)) as a,
        BackgroundServer(echo_app(seen_b)) as b,
        BackgroundServer(echo_app(seen_c)) as c,
    ):
        targets = {"a": a.url, "b": b.url, "c": c.url}
        path = tmp_path / "config.toml"
        path.write_text(config_text(targets, port=first, own_ports={"b": second, "c": third}))
        controller = ProxyController.from_config(ConfigBinding(path, watch=False), port_holder=port_holder)
        follow.append(controller)
        controller.start()

        path.write_text(config_text(targets, port=second, own_ports={"b": first, "c": third}))
        assert controller.reload_config()
        assert controller.status.problem is None, controller.status
        assert get(second, "/main").status_code == 200
        assert get(first, "/b-1").status_code == 200

        path.write_text(config_text(targets, port=second, own_ports={"b": third, "c": first}))
        assert controller.reload_config()
        assert controller.status.problem is None, controller.status
        assert [(own.name, own.addresses) for own in controller.status.target_ports] == [
            ("b", (("127.0.0.1", third),)),
            ("c", (("127.0.0.1", first),)),
        ]
        assert get(third, "/b-2").status_code == 200
        assert get(first, "/c").status_code == 200
    assert paths(seen_a) == ["/main"]
    assert paths(seen_b) == ["/b-1", "/b-2"]
    assert paths(seen_c) == ["/c"]


def test_editing_a_target_on_its_own_port_logs_what_changed_not_a_switch(
    tmp_path: Path, follow: list[ProxyController], caplog: pytest.LogCaptureFixture
) -> None:
    """Giving ``b`` (on a port of its own) a new URL is logged as that change, naming the
    target, its port and the new URL, not as ``target is now b``, which reads as if the main
    port had switched to b. Choosing another target for the main port still says so."""
    caplog.set_level(logging.INFO, logger="trayproxy")
    with BackgroundServer(echo_app()) as first, BackgroundServer(echo_app()) as second:
        path = tmp_path / "config.toml"
        own = free_port()
        text = config_text({"a": first.url, "b": first.url}, port=0, own_ports={"b": own})
        path.write_text(text)
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        controller.start()
        caplog.clear()

        path.write_text(text.replace(f'[targets.b]\nurl = "{first.url}"', f'[targets.b]\nurl = "{second.url}"'))
        assert controller.reload_config()
        said = [record.getMessage() for record in caplog.records]
        assert not [line for line in said if "target is now" in line], said
        assert f"target b on port {own}: url is now {second.url}" in said, said

        caplog.clear()
        controller.choose_target("b")
        assert "target is now b" in [record.getMessage() for record in caplog.records]


def test_a_start_refused_by_a_taken_main_port_is_tried_again_until_the_port_is_free(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Found by the new-user trial: the tray started while another program held port 8000 said
    "not running" for good, although moved and own ports are tried again every few seconds.
    Now the main port is too, until it opens or the person presses Stop."""
    port = free_port()
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as target:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"echo": target.url}, port=port))
        holder = PortHolder(port)
        try:
            controller = start_following(follow, path, port_retry_s=0.3, start=False)
            with pytest.raises(ListenError):
                controller.start()
            assert controller.status.state == "error"
            threading.Event().wait(1.0)  # tried again while still taken: nothing changes
            assert controller.status.state == "error"
        finally:
            holder.close()
        assert wait_until(lambda: controller.status.state == "running", timeout_s=FOLLOW_TIMEOUT_S)
        assert controller.status.error is None
        assert get(port, "/after").status_code == 200

        # Stop means stop: a port freed after a Stop does not start the proxy by itself.
        controller.stop()
        with PortHolder(port):
            with pytest.raises(ListenError):
                controller.start()
            controller.stop()
        threading.Event().wait(1.0)
        assert controller.status.state != "running"
