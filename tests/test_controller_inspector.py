"""The controller runs the inspector: one store for every listener, following [inspector].

What a person sees in the inspector is what passed through the main port and the targets' own
ports; `enabled = false` in the file stops the listing (and drops what was held) without a
restart, and `true` again lists from the next request on.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port

from desktop.controller import ConfigBinding, ProxyController


def echo() -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _listed(controller: ProxyController) -> list[tuple[str, int]]:
    return [(e.head.raw_path, e.status) for e in controller.inspector.store.exchanges()]


def _config(path: Path, url: str, inspector: str) -> None:
    path.write_text(
        'active = "main"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
        f"[inspector]\n{inspector}\n"
        f'[targets.main]\nurl = "{url}"\n'
    )


def test_requests_are_listed_and_an_edit_switching_the_inspector_off_stops_it(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    with BackgroundServer(echo()) as target:
        path = tmp_path / "config.toml"
        _config(path, target.url, "enabled = true")
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        url = controller.start().local_url
        assert httpx.get(f"{url}/v1/models").status_code == 200
        assert httpx.get(f"{url}/__trayproxy/health").status_code == 200  # the proxy's own: not listed
        assert _listed(controller) == [("/v1/models", 200)]

        _config(path, target.url, "enabled = false")
        assert controller.reload_config()
        assert _listed(controller) == []  # switched off: what was held is gone
        assert httpx.get(f"{url}/v1/one").status_code == 200
        assert _listed(controller) == []

        _config(path, target.url, "enabled = true\nmax_rows = 100")
        assert controller.reload_config()
        assert httpx.get(f"{url}/v1/two").status_code == 200
        deadline = time.monotonic() + 5
        while not _listed(controller) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _listed(controller) == [("/v1/two", 200)]
        assert controller.inspector.store.max_rows == 100


def test_a_target_on_a_port_of_its_own_is_listed_in_the_same_store(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    with BackgroundServer(echo()) as target:
        path = tmp_path / "config.toml"
        path.write_text(
            'active = "main"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
            f'[targets.main]\nurl = "{target.url}"\n'
            f'[targets.side]\nurl = "{target.url}"\nport = {free_port()}\n'
        )
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        status = controller.start()
        (side,) = status.target_ports
        assert httpx.get(f"{status.local_url}/main").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{side.port}/side").status_code == 200
        ports = {e.head.raw_path: e.head.port for e in controller.inspector.store.exchanges()}
        assert ports == {"/main": controller.status.addresses[0][1], "/side": side.port}


def test_serve_flags_switch_the_inspector_or_its_bodies_off_over_the_file(tmp_path: Path) -> None:
    """`serve --no-inspector` and `--no-inspector-bodies` win over the file's [inspector]."""
    from desktop.config.follow import KeyReader, Overrides, plan_for, read_config

    path = tmp_path / "config.toml"
    _config(path, "http://127.0.0.1:9", "enabled = true\nbodies = true")
    config = read_config(path, Overrides())
    assert plan_for(config, path, Overrides(), KeyReader()).inspector.enabled
    off = plan_for(config, path, Overrides(no_inspector=True), KeyReader()).inspector
    assert not off.enabled
    no_bodies = plan_for(config, path, Overrides(no_inspector_bodies=True), KeyReader()).inspector
    assert no_bodies.enabled
    assert not no_bodies.keep_bodies


def test_the_running_proxy_tells_where_its_inspector_is_and_stop_takes_that_back(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """`trayproxy inspect` finds the page through a 0600 session file the running proxy writes;
    "Open inspector" gets a 0600 local file holding a one-time link (not a URL on a command
    line); Stop removes the session file."""
    import json
    import re

    with BackgroundServer(echo()) as target:
        path = tmp_path / "config.toml"
        _config(path, target.url, "enabled = true")
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        runtime = tmp_path / "run"
        controller.inspector.session_dir = runtime
        with pytest.raises(RuntimeError, match="not running"):
            controller.inspector_link()
        status = controller.start()
        session = runtime / "inspector.json"
        assert session.stat().st_mode & 0o777 == 0o600
        assert json.loads(session.read_text())["port"] == status.addresses[0][1]

        page, opener = controller.inspector_link()
        assert page == f"{status.local_url}{controller.inspector.access.page_path}"
        assert opener is not None
        assert opener.stat().st_mode & 0o777 == 0o600
        link = re.search(r'url=([^"]+)"', opener.read_text())
        assert link is not None
        assert link.group(1).startswith(f"{status.local_url}/__trayproxy/inspector/open?code=")

        controller.stop()
        assert not session.exists()


def test_a_wildcard_listen_address_is_reached_on_loopback(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Listening on 0.0.0.0, the page and `trayproxy inspect` still use 127.0.0.1: the guard
    allows no Host 0.0.0.0, so a link to it would only ever get 403."""
    import json

    with BackgroundServer(echo()) as target:
        path = tmp_path / "config.toml"
        path.write_text(f'[listen]\nhosts = ["0.0.0.0"]\nport = 0\n[targets.main]\nurl = "{target.url}"\n')
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        controller.inspector.session_dir = tmp_path / "run"
        port = controller.start().addresses[0][1]
        page, _ = controller.inspector_link()
        assert page == f"http://127.0.0.1:{port}{controller.inspector.access.page_path}"
        assert json.loads((tmp_path / "run" / "inspector.json").read_text())["host"] == "127.0.0.1"


def test_the_inspector_switched_off_answers_404_and_logs_no_access_line(
    tmp_path: Path, follow: list[ProxyController], caplog: pytest.LogCaptureFixture
) -> None:
    """An open tab keeps asking while the inspector is off: it is told why (404 inspector_off),
    and its requests stay out of the access log, which would print the page's per-run path."""
    import logging

    with BackgroundServer(echo()) as target:
        path = tmp_path / "config.toml"
        _config(path, target.url, "enabled = false")
        controller = ProxyController.from_config(ConfigBinding(path, watch=False))
        follow.append(controller)
        url = controller.start().local_url
        caplog.set_level(logging.INFO, "trayproxy.access")
        page = controller.inspector.access.page_path
        answer = httpx.get(f"{url}{page}api/events")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "inspector_off"
        assert page not in caplog.text
