"""``trayproxy inspect``, the real CLI in a subprocess, against a real ProxyService serving the
inspector on 127.0.0.1 and the session file it would write in the runtime directory.

What a person would notice: the browser started with the one-time link on its command line
(readable in ``ps`` by anyone on the machine), a link that does not open the page, an export
readable by other users or half-written, an unhelpful message when no TrayProxy runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cli_process import run_cli
from upstreams import dead_port

from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.service import ProxyService
from desktop.inspector.access import COOKIE_NAME, InspectorAccess, write_session_file
from desktop.inspector.store import InspectorStore
from desktop.inspector.web import InspectorPages

KEY = "sk-inspect-command-key-0b8e51d4c2a7"


def runtime_dir() -> Path:
    """Where a TrayProxy of this test's user writes its session file (platformdirs' runtime
    dir under the test's own XDG_RUNTIME_DIR)."""
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "TrayProxy"


def read_private(path: Path) -> tuple[int, str]:
    """The permission bits and text of a file the command wrote in the runtime directory."""
    assert path.parent == runtime_dir()
    return stat.S_IMODE(path.stat().st_mode), path.read_text()


async def inspect(*args: str) -> Any:
    """``trayproxy inspect ARGS`` to its end, off the loop the proxy runs on."""
    return await asyncio.to_thread(run_cli, "inspect", *args)


@pytest.fixture
async def running(aiohttp_server: Any) -> AsyncIterator[ProxyService]:
    """A proxy with the inspector, one request through it, and its session file written."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-test"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = await aiohttp_server(app)
    store, access = InspectorStore(), InspectorAccess()
    service = ProxyService(
        ProxySettings(hosts=("127.0.0.1",), port=0),
        Target(
            url=str(server.make_url("")),
            name="openai",
            add_headers=(("Authorization", Secret(f"Bearer {KEY}")),),
        ),
        tap=store,
        pages=InspectorPages(store, access),
    )
    await service.start()
    write_session_file(runtime_dir(), "127.0.0.1", service.port, access)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{service.port}/v1/models") as answer,
    ):
        assert answer.status == 200
    try:
        yield service
    finally:
        await service.stop(grace_s=0.5)


async def test_url_prints_a_link_that_opens_the_page_once(running: ProxyService) -> None:
    result = await inspect("--url")
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith(f"http://127.0.0.1:{running.port}/__trayproxy/inspector/open?code=")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        async with client.get(link) as opened:
            assert opened.status == 200
            assert opened.cookies[COOKIE_NAME].value
        async with client.get(link) as again:
            assert again.status == 403


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script stands in for the browser")
async def test_the_browser_is_given_a_private_file_not_the_code(
    running: ProxyService, tmp_path: Path
) -> None:
    """The browser's command line shows in ``ps`` to every user: it gets the path of a 0600
    file in the runtime directory, which holds the one-time link."""
    seen = tmp_path / "browser-args"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\n')
    browser.chmod(0o700)
    result = await asyncio.to_thread(run_cli, "inspect", env={**os.environ, "BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    (argument,) = seen.read_text().split()
    assert argument.startswith("file://")
    assert "code" not in argument
    opener_mode, opener_text = read_private(Path(argument.removeprefix("file://")))
    assert opener_mode == 0o600
    assert f"http://127.0.0.1:{running.port}/__trayproxy/inspector/open?code=" in opener_text
    assert f"http://127.0.0.1:{running.port}/__trayproxy/inspector/" in result.stderr


async def test_exports_are_written_whole_and_private(running: ProxyService, tmp_path: Path) -> None:
    har, jsonl = tmp_path / "out.har", tmp_path / "out.jsonl"
    result = await inspect("--har", str(har), "--jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    assert "/v1/models" in json.dumps(json.loads(har.read_text()))
    (line,) = jsonl.read_text().splitlines()
    assert json.loads(line)["path"] == "/v1/models"
    for path in (har, jsonl):
        assert KEY not in path.read_text()
        if sys.platform != "win32":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"Wrote {jsonl} (1 requests)." in result.stderr
    to_stdout = await inspect("--jsonl", "-")
    assert json.loads(to_stdout.stdout)["path"] == "/v1/models"


async def test_without_a_running_trayproxy_it_says_so() -> None:
    result = await inspect("--url")
    assert result.returncode == 1
    assert "No TrayProxy with its inspector on is running" in result.stderr
    assert "[inspector] enabled" in result.stderr
    assert result.stdout == ""


async def test_a_session_file_left_by_a_run_that_ended_says_it_stopped() -> None:
    write_session_file(runtime_dir(), "127.0.0.1", dead_port(), InspectorAccess())
    result = await inspect("--url")
    assert result.returncode == 1
    assert "no TrayProxy answers at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_session_file_of_another_run_is_refused(running: ProxyService) -> None:
    """The file names the port of a TrayProxy that is not the one that wrote it (restarted)."""
    write_session_file(runtime_dir(), "127.0.0.1", running.port, InspectorAccess())
    result = await inspect("--url")
    assert result.returncode == 1
    assert "refused this session" in result.stderr
