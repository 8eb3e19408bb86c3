"""The controller following its config file, driven from the test's thread like the tray does.

A person edits ``config.toml`` while tools are using the proxy: new requests go where the file
now says within a few seconds, without a restart, and anything already open finishes where it
was; a broken edit is pointed at by file, line and column while the last good config keeps
serving; choosing a target in the menu switches at once and is written back into the file with
its comments; a target that rejects the key, rate limits or cannot be reached shows as the
target's condition (once per change, not once per request); and a key from a command is fetched
again when the target says 401, but not on every 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, wait_until
from upstreams import Seen, dead_port, echo_app

from desktop.controller import KEY_REFRESH_MIN_INTERVAL_S, ConfigBinding, ProxyController, ProxyStatus

# The watcher looks at the file once a second; a reload, a key command (a Python start) and a
# loaded CI machine fit well inside this.
FOLLOW_TIMEOUT_S = 10.0
# A request through the proxy to a local test target that takes this long is hanging.
CLIENT_TIMEOUT_S = 10.0
# Refusals the proxy's Host guard gives (DNS rebinding protection).
HOST_REFUSED = 403
# A Host name that is not loopback; sent only as a header to 127.0.0.1, never looked up.
LAN_HOST = "devbox.internal"


def start_following(
    made: list[ProxyController],
    path: Path,
    *,
    pinned_target: str | None = None,
    key_refresh_interval_s: float = KEY_REFRESH_MIN_INTERVAL_S,
) -> ProxyController:
    controller = ProxyController.from_config(
        ConfigBinding(path, pinned_target=pinned_target, key_refresh_interval_s=key_refresh_interval_s)
    )
    made.append(controller)
    controller.start()
    return controller


def config_text(targets: dict[str, str], *, active: str, extra: str = "", allowed_hosts: str = "") -> str:
    """A config listening on 127.0.0.1 at a free port, with ``targets`` (name -> url)."""
    tables = "".join(f'\n[targets.{name}]\nurl = "{url}"\n' for name, url in targets.items())
    return (
        f'active = "{active}"\n\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n\n'
        f"[security]\nallowed_hosts = [{allowed_hosts}]\n{tables}{extra}"
    )


def get(controller: ProxyController, path: str, **headers: str) -> httpx.Response:
    url = controller.status.local_url
    assert url is not None
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        return client.get(f"{url}{path}", headers=headers)


def paths(seen: Seen) -> list[object]:
    return [request["raw_path"] for request in seen.requests]


GATE = web.AppKey("gate", threading.Event)


def gated_stream_app(seen: Seen) -> web.Application:
    """``/stream`` sends ``data: first``, waits until ``app[GATE]`` is set, then ``data: last``;
    any other path is recorded in ``seen`` and answered. A test controls when the stream ends."""

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        async with asyncio.timeout(CLIENT_TIMEOUT_S * 2):
            # The gate is set from the test's thread, where an asyncio.Event cannot be set.
            while not request.app[GATE].is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await response.write(b"data: last\n\n")
        await response.write_eof()
        return response

    async def other(request: web.Request) -> web.Response:
        seen.requests.append({"raw_path": request.raw_path})
        return web.json_response({"raw_path": request.raw_path})

    app = web.Application()
    app[GATE] = threading.Event()
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


@dataclass
class KeyedTarget:
    """A target that checks the bearer token: ``accepted`` tokens get ``status`` (None accepts
    any token), others 401. ``tokens`` lists what each request carried."""

    status: int = 200
    accepted: set[str] | None = None
    tokens: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            self.tokens.append(token)
            status = self.status if self.accepted is None or token in self.accepted else 401
            return web.Response(
                status=status, text=json.dumps({"status": status}), content_type="application/json"
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        return app


def test_editing_the_active_targets_url_moves_new_requests_and_an_open_stream_ends_on_the_old(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Pointing the active target at another server in the file: within a few seconds new
    requests go there, on the same local address, while a stream opened before the edit
    keeps coming from the old server to its end."""
    seen_old, seen_new = Seen(), Seen()
    with (
        BackgroundServer(gated_stream_app(seen_old)) as old,
        BackgroundServer(echo_app(seen_new)) as new,
    ):
        path = tmp_path / "config.toml"
        path.write_text(config_text({"main": old.url}, active="main"))
        controller = start_following(follow, path)
        address = controller.status.addresses
        with (
            httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client,
            client.stream("GET", f"{controller.status.local_url}/stream") as stream,
        ):
            lines = stream.iter_lines()
            assert next(line for line in lines if line) == "data: first"

            path.write_text(config_text({"main": new.url}, active="main"))
            assert wait_until(lambda: controller.status.target_url == new.url, timeout_s=FOLLOW_TIMEOUT_S)
            assert get(controller, "/v1/models").status_code == 200
            assert paths(seen_new) == ["/v1/models"]

            old.app[GATE].set()
            rest = [line for line in lines if line]
        assert rest == ["data: last"]
        assert paths(seen_old) == []  # the only request it had was the stream
        assert controller.status.addresses == address
        assert controller.status.state == "running"
        assert controller.status.config_error is None


def test_changing_active_in_the_file_switches_target_once(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Changing ``active`` by hand switches the target live; the tray hears of it once."""
    seen_a, seen_b = Seen(), Seen()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": a.url, "b": b.url}, active="a"))
        controller = start_following(follow, path)
        snapshots: list[ProxyStatus] = []
        controller.add_listener(snapshots.append)
        assert get(controller, "/one").status_code == 200

        path.write_text(config_text({"a": a.url, "b": b.url}, active="b"))
        assert wait_until(lambda: controller.status.target_name == "b", timeout_s=FOLLOW_TIMEOUT_S)
        assert get(controller, "/two").status_code == 200
    assert paths(seen_a) == ["/one"]
    assert paths(seen_b) == ["/two"]
    assert [(s.target_name, s.target_url) for s in snapshots] == [("b", b.url)]


def test_a_same_size_in_place_save_within_one_clock_tick_is_noticed(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """An editor that rewrites the file in place with the same length, on a file system whose
    timestamps are coarse (FAT, HFS+: the mtime does not move), still gets its edit applied."""
    seen_a, seen_b = Seen(), Seen()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": a.url, "b": b.url}, active="a"))
        controller = start_following(follow, path)
        before = path.stat()
        with path.open("r+") as handle:  # in place: same inode, same size
            handle.write(config_text({"a": a.url, "b": b.url}, active="b"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
        assert wait_until(lambda: controller.status.target_name == "b", timeout_s=FOLLOW_TIMEOUT_S)
        assert get(controller, "/after").status_code == 200
    assert paths(seen_b) == ["/after"]


@pytest.mark.parametrize(
    ("bad_edit", "position", "words"),
    [
        ('active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9\n', ":3:", "not valid TOML"),
        ('active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nread_timout = 5\n', ":4:1:", "read_timout"),
    ],
    ids=["bad-toml", "unknown-key"],
)
def test_a_broken_edit_is_pointed_at_and_the_last_good_config_keeps_serving(
    tmp_path: Path,
    follow: list[ProxyController],
    caplog: pytest.LogCaptureFixture,
    bad_edit: str,
    position: str,
    words: str,
) -> None:
    """Saving a mistake does not break the tools: requests keep going to the last good
    target, the status and the log say file:line:col and what is wrong, and saving the file
    fixed applies it and clears the message."""
    seen_a, seen_b = Seen(), Seen()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": a.url}, active="a"))
        controller = start_following(follow, path)

        path.write_text(bad_edit)
        assert wait_until(lambda: controller.status.config_error is not None, timeout_s=FOLLOW_TIMEOUT_S)
        error = controller.status.config_error
        assert error is not None
        assert f"{path}{position}" in error
        assert words in error
        assert controller.status.problem is not None
        assert f"{path}{position}" in controller.status.problem
        assert any(f"{path}{position}" in record.getMessage() for record in caplog.records)
        assert get(controller, "/still-a").status_code == 200
        assert controller.status.target_url == a.url

        path.write_text(config_text({"a": a.url, "b": b.url}, active="b"))
        assert wait_until(lambda: controller.status.config_error is None, timeout_s=FOLLOW_TIMEOUT_S)
        assert controller.status.target_name == "b"
        assert controller.status.problem is None
        assert get(controller, "/now-b").status_code == 200
    assert paths(seen_a) == ["/still-a"]
    assert paths(seen_b) == ["/now-b"]


@pytest.mark.parametrize("pinned", [False, True], ids=["active", "pinned"])
def test_removing_the_target_in_use_keeps_it_and_says_so(
    tmp_path: Path, follow: list[ProxyController], pinned: bool
) -> None:
    """Deleting the target in use from the file (the active one, or the one `serve --target`
    pinned) does not cut the tools off: it keeps serving, and the status names the target."""
    seen_a = Seen()
    with BackgroundServer(echo_app(seen_a)) as a:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": a.url, "b": "http://127.0.0.1:9"}, active="a"))
        controller = start_following(follow, path, pinned_target="a" if pinned else None)

        path.write_text(config_text({"b": "http://127.0.0.1:9"}, active="b" if pinned else "a"))
        assert wait_until(lambda: controller.status.config_error is not None, timeout_s=FOLLOW_TIMEOUT_S)
        assert "'a'" in (controller.status.config_error or "")
        assert str(path) in (controller.status.config_error or "")
        assert controller.status.target_name == "a"
        assert get(controller, "/kept").status_code == 200
    assert paths(seen_a) == ["/kept"]


def key_command(tmp_path: Path) -> tuple[str, Path]:
    """A key command printing ``token-1``, ``token-2``, ... one more each run; and the counter
    file holding how many times it ran (replaced by a rename, so the test, polling it, never
    reads it emptied in the middle of a write: a lowest-versions CI run once did)."""
    counter = tmp_path / "runs.txt"
    counter.write_text("0")
    script = tmp_path / "next_token.py"
    script.write_text(
        "import pathlib, sys\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        "print(f'token-{runs}')\n"
    )
    return f'"{sys.executable}" "{script}"', counter


def runs(counter: Path) -> int:
    return int(counter.read_text())


def test_choosing_a_target_switches_now_saves_it_with_comments_and_runs_its_key_once(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Picking a target in the menu: the next request goes there, the file says
    ``active = "that"`` with every comment kept, the menu lists targets in file order, and the
    file write (or a later unrelated edit) does not switch again or re-run the key command."""
    seen_a = Seen()
    keyed = KeyedTarget()
    command, counter = key_command(tmp_path)
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(keyed.app()) as b:
        path = tmp_path / "config.toml"
        original = (
            "# my proxy settings\n"
            'active = "zeta"  # the one I use most\n\n'
            '[listen]\nhosts = ["127.0.0.1"]\nport = 0\n\n'
            f'[targets.zeta]\nurl = "{a.url}"  # local model\n\n'
            "# the company gateway; token from SSO\n"
            f'[targets.alpha]\nurl = "{b.url}"\n'
            f"key = {{ command = '{command}' }}\n"
            'headers = { Authorization = "Bearer {key}" }\n'
        )
        path.write_text(original)
        controller = start_following(follow, path)
        assert controller.status.targets == ("zeta", "alpha")
        snapshots: list[ProxyStatus] = []
        controller.add_listener(snapshots.append)

        controller.choose_target("alpha")
        assert controller.status.target_name == "alpha"
        assert get(controller, "/v1/models").status_code == 200
        assert keyed.tokens == ["token-1"]
        assert path.read_text() == original.replace('active = "zeta"', 'active = "alpha"')

        # An unrelated edit that moves every line down: once it shows, the watcher has also
        # seen the save.
        path.write_text("# edited\n" + path.read_text() + '\n[targets.mid]\nurl = "http://127.0.0.1:9"\n')
        assert wait_until(lambda: len(controller.status.targets) == 3, timeout_s=FOLLOW_TIMEOUT_S)
        edited = controller.status  # a fresh snapshot (mypy keeps the narrowing from above)
        assert edited.targets == ("zeta", "alpha", "mid")
        assert get(controller, "/v1/chat").status_code == 200
    assert path.read_text().startswith('# edited\n# my proxy settings\nactive = "alpha"')
    assert runs(counter) == 1
    assert keyed.tokens == ["token-1", "token-1"]
    assert [s.target_name for s in snapshots] == ["alpha", "alpha"]
    assert snapshots[-1].targets == ("zeta", "alpha", "mid")
    assert paths(seen_a) == []


def test_a_rejected_key_rate_limit_and_dead_port_show_as_the_targets_condition(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """The tray shows what is wrong with the target, in words naming it, and clears it when
    the target answers normally again: a rejected key (401), a rate limit (429), a target
    that cannot be reached."""
    keyed = KeyedTarget(status=401)
    with BackgroundServer(keyed.app()) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(
            config_text({"acme": upstream.url, "gone": f"http://127.0.0.1:{dead_port()}"}, active="acme")
        )
        controller = start_following(follow, path)

        assert get(controller, "/v1/models").status_code == 401
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
        condition = controller.status.condition
        assert condition is not None
        assert (condition.kind, condition.status, condition.target_name) == ("key_rejected", 401, "acme")
        assert "acme" in condition.message
        assert controller.status.problem == condition.message

        keyed.status = 200
        assert get(controller, "/v1/models").status_code == 200
        assert wait_until(lambda: controller.status.condition is None, timeout_s=FOLLOW_TIMEOUT_S)
        assert controller.status.problem is None

        keyed.status = 429
        assert get(controller, "/v1/models").status_code == 429
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
        assert controller.status.condition is not None
        assert controller.status.condition.kind == "rate_limited"
        assert "acme" in controller.status.condition.message

    controller.choose_target("gone")
    assert controller.status.condition is None  # a new target starts with a clean slate
    assert get(controller, "/v1/models").status_code == 502
    assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
    assert controller.status.condition is not None
    assert (controller.status.condition.kind, controller.status.condition.target_name) == (
        "unreachable",
        "gone",
    )


def test_fifty_rejected_requests_change_the_status_once(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A tool retrying against a rejected key does not make the tray flicker or notify 50
    times: the status changes once when the key is first rejected, once when it works again."""
    keyed = KeyedTarget(status=401)
    with BackgroundServer(keyed.app()) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"acme": upstream.url}, active="acme"))
        controller = start_following(follow, path)
        snapshots: list[ProxyStatus] = []
        controller.add_listener(snapshots.append)

        url = controller.status.local_url
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
            codes = [client.get(f"{url}/v1/chat/{index}").status_code for index in range(50)]
            keyed.status = 200
            codes += [client.get(f"{url}/v1/chat/{index}").status_code for index in range(50)]
        assert codes == [401] * 50 + [200] * 50
        assert wait_until(lambda: len(snapshots) == 2, timeout_s=FOLLOW_TIMEOUT_S)
    conditions = [s.condition.kind if s.condition else None for s in snapshots]
    assert conditions == ["key_rejected", None]


def test_a_command_key_is_fetched_again_after_a_401_but_not_on_every_401(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A short-lived SSO token expires: after the target's 401 the key command runs again and
    the next request carries the new token. When that one is refused too, soon after, the
    command is not run again (no SSO page opening on every request)."""
    assert KEY_REFRESH_MIN_INTERVAL_S >= 10  # the second 401 below comes well within it
    keyed = KeyedTarget(accepted={"token-2"})
    command, counter = key_command(tmp_path)
    with BackgroundServer(keyed.app()) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(
            config_text(
                {},
                active="corp",
                extra=(
                    f"[targets.corp]\nurl = \"{upstream.url}\"\nkey = {{ command = '{command}' }}\n"
                    'headers = { Authorization = "Bearer {key}" }\n'
                ),
            )
        )
        controller = start_following(follow, path)
        assert runs(counter) == 1

        assert get(controller, "/v1/models").status_code == 401
        assert wait_until(lambda: runs(counter) == 2, timeout_s=FOLLOW_TIMEOUT_S)
        assert wait_until(
            lambda: get(controller, "/v1/models").status_code == 200, timeout_s=FOLLOW_TIMEOUT_S
        )
        assert keyed.tokens[0] == "token-1"
        assert set(keyed.tokens[1:]) == {"token-2"}
        assert controller.status.condition is None

        keyed.accepted = set()
        assert get(controller, "/v1/models").status_code == 401
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
        # An unrelated edit that moves every line down: once it shows, the watcher has done
        # the queued refresh.
        path.write_text("# edited\n" + path.read_text() + '\n[targets.other]\nurl = "http://127.0.0.1:9"\n')
        assert wait_until(lambda: len(controller.status.targets) == 2, timeout_s=FOLLOW_TIMEOUT_S)
        assert get(controller, "/v1/models").status_code == 401
    assert runs(counter) == 2
    assert keyed.tokens[-1] == "token-2"
    assert controller.status.condition is not None
    assert controller.status.condition.kind == "key_rejected"


def test_adding_an_allowed_host_applies_without_a_restart(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A tool on another name for this machine is refused (DNS rebinding protection) until
    its host is added to ``allowed_hosts``; saving the file lets it in, no restart needed."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": upstream.url}, active="a"))
        controller = start_following(follow, path)
        port = controller.status.addresses

        refused = get(controller, "/before", Host=LAN_HOST)
        assert refused.status_code == HOST_REFUSED
        assert refused.json()["error"]["code"] == "host_not_allowed"

        path.write_text(config_text({"a": upstream.url}, active="a", allowed_hosts=f'"{LAN_HOST}"'))
        assert wait_until(
            lambda: get(controller, "/after", Host=LAN_HOST).status_code == 200, timeout_s=FOLLOW_TIMEOUT_S
        )
        assert controller.status.addresses == port
    assert paths(seen) == ["/after"]


def test_config_errors_are_logged_at_error_level(
    tmp_path: Path, follow: list[ProxyController], caplog: pytest.LogCaptureFixture
) -> None:
    """A bad edit reaches the log as an error (the tray's log file, serve's stderr) once."""
    with BackgroundServer(echo_app()) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(config_text({"a": upstream.url}, active="a"))
        controller = start_following(follow, path)
        with caplog.at_level(logging.INFO, logger="trayproxy.controller"):
            path.write_text(config_text({"a": upstream.url}, active="a") + "bogus = 1\n")
            assert wait_until(lambda: controller.status.config_error is not None, timeout_s=FOLLOW_TIMEOUT_S)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and str(path) in r.getMessage()]
    assert len(errors) == 1
    assert "bogus" in errors[0].getMessage()


def test_a_key_still_rejected_after_the_interval_is_fetched_again_without_a_new_401(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """A refresh skipped as too soon is not forgotten: while the target keeps rejecting the key,
    the command runs again once the interval is over (a person who signs in to their SSO again
    meanwhile is not stuck until a restart)."""
    keyed = KeyedTarget(accepted={"token-3"})
    command, counter = key_command(tmp_path)
    with BackgroundServer(keyed.app()) as upstream:
        path = tmp_path / "config.toml"
        path.write_text(
            config_text(
                {},
                active="corp",
                extra=(
                    f"[targets.corp]\nurl = \"{upstream.url}\"\nkey = {{ command = '{command}' }}\n"
                    'headers = { Authorization = "Bearer {key}" }\n'
                ),
            )
        )
        controller = start_following(follow, path, key_refresh_interval_s=1.0)
        assert get(controller, "/v1/models").status_code == 401  # token-1: refresh -> token-2
        assert wait_until(lambda: runs(counter) == 2, timeout_s=FOLLOW_TIMEOUT_S)
        # token-2 in place (its target's fresh start clears the rejection), then sent.
        assert wait_until(lambda: controller.status.condition is None, timeout_s=FOLLOW_TIMEOUT_S)
        assert get(controller, "/v1/models").status_code == 401  # token-2: too soon, due later
        assert wait_until(lambda: runs(counter) == 3, timeout_s=FOLLOW_TIMEOUT_S)
        assert wait_until(
            lambda: get(controller, "/v1/models").status_code == 200, timeout_s=FOLLOW_TIMEOUT_S
        )
    assert keyed.tokens[-1] == "token-3"


@pytest.mark.parametrize(
    ("extra", "require_token", "words"),
    [
        ("", False, "acme answered HTTP 401 to the client's own credentials (TrayProxy adds no key"),
        ("", True, "acme answered HTTP 401: it got no key"),
        ('key = "tp-proxy-key-7c1d"\nheaders = { Authorization = "Bearer {key}" }\n', False, "acme rejected the key (HTTP 401)"),
    ],
    ids=["client-key", "no-key-with-token", "proxy-key"],
)
def test_a_401_blames_the_proxys_key_only_when_it_added_one(
    tmp_path: Path,
    follow: list[ProxyController],
    extra: str,
    require_token: bool,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A target with no key of its own (the client's Authorization passes through) that answers
    401 rejected the client's credentials, not TrayProxy's key; with a key added, it did."""
    with BackgroundServer(KeyedTarget(status=401).app()) as upstream:
        path = tmp_path / "config.toml"
        text = config_text({"acme": upstream.url}, active="acme") + extra
        if require_token:
            text = text.replace("[security]\n", "[security]\nrequire_token = true\n")
        path.write_text(text)
        controller = start_following(follow, path)
        token = controller.status.local_token
        credential = token.reveal() if token is not None else "client-own-key"
        assert get(controller, "/v1/models", Authorization=f"Bearer {credential}").status_code == 401
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=FOLLOW_TIMEOUT_S)
        condition = controller.status.condition
        assert condition is not None
        assert condition.kind == "key_rejected"
        assert words in condition.message
        assert controller.status.problem == condition.message
    # The log (serve's stderr, the tray's file) says the same, never both versions.
    warnings = [record.getMessage() for record in caplog.records if "HTTP 401" in record.getMessage()]
    assert warnings
    assert all(words in warning for warning in warnings), warnings
