"""The local access token end to end: `trayproxy serve`, the CLI, the controller and real SDKs.

Someone sets ``require_token = true`` so that only the tools they hand the token to can spend
their keys. Tools without it (or with an old one) get a 401 their SDK shows with where to find
the token; tools that send it, as the OpenAI SDK's key or in ``x-api-key`` / ``api-key``, reach
the target, which sees its real key and never the token; WebSockets likewise. Turning the
setting on in the file and rotating the token with ``trayproxy config token --rotate`` apply to
the running proxy without a restart. The token file is owner-only and the token is never logged.
Targets are real aiohttp servers on 127.0.0.1; the proxy is a real subprocess or controller.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from aiohttp import WSMsgType, web
from background import BackgroundServer, free_port, wait_until
from cli_process import ServeProcess, run_cli
from listen_helpers import proxy_answers
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from desktop.clients import Endpoint, environment_lines
from desktop.config.localtoken import TOKEN_FILE_NAME
from desktop.config.model import LOCAL_TOKEN_PREFIX
from desktop.controller import ConfigBinding, ProxyController

KEY_VARIABLE = "TP_LOCAL_TOKEN_TEST_KEY"
REAL_KEY = "sk-real-upstream-key-5d2c7e19a0b4"
# A Python start with aiohttp imported plus the watcher's 1 s poll, on a loaded machine.
SERVE_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0


@dataclass
class Recorder:
    """What the target received: each request's headers, and each WebSocket handshake's."""

    requests: list[dict[str, str]] = field(default_factory=list)
    handshakes: list[dict[str, str]] = field(default_factory=list)

    def header_values(self) -> list[str]:
        return [value for headers in self.requests + self.handshakes for value in headers.values()]


def recording_app(recorder: Recorder) -> web.Application:
    """``/v1/models`` answers an OpenAI-style model list, ``/ws`` echoes text, anything else
    answers ``{"ok": true}``; every request's headers are recorded (lower-case names)."""

    def headers_of(request: web.Request) -> dict[str, str]:
        return {name.lower(): value for name, value in request.headers.items()}

    async def models(request: web.Request) -> web.Response:
        recorder.requests.append(headers_of(request))
        model = {"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}
        return web.json_response({"object": "list", "data": [model]})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        recorder.handshakes.append(headers_of(request))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    async def other(request: web.Request) -> web.Response:
        recorder.requests.append(headers_of(request))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def config_text(url: str, port: int, *, require_token: bool, extra: str = "") -> str:
    return (
        f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        f"[security]\nrequire_token = {'true' if require_token else 'false'}\n"
        f'[targets.keyed]\nurl = "{url}"\nkey = {{ env = "{KEY_VARIABLE}" }}\n'
        'headers = { Authorization = "Bearer {key}" }\n' + extra
    )


def get(port: int, path: str = "/v1/models", **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, trust_env=False, timeout=CLIENT_TIMEOUT_S)


def status_of(port: int, **headers: str) -> int:
    return get(port, **headers).status_code


def assert_never_leaked(token: str, text: str, where: str) -> None:
    assert token not in text, f"the token leaked into {where}"
    assert token[-16:] not in text, f"part of the token leaked into {where}"


def test_sdks_without_the_token_get_401_and_with_it_reach_the_target_with_its_real_key(tmp_path: Path) -> None:
    """With `require_token = true`: the token file appears owner-only, `trayproxy config token`
    prints it; no token or a wrong one is a 401 the OpenAI SDK raises with where to find the
    token; the token as the SDK's key, in x-api-key or in api-key gets through, and the target
    sees its real key and never the token; a WebSocket needs it too; nothing is logged of it."""
    recorder = Recorder()
    port = free_port()
    with BackgroundServer(recording_app(recorder)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(config_text(upstream.url, port, require_token=True))
        serve = ServeProcess(config, env={KEY_VARIABLE: REAL_KEY})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            token_file = tmp_path / TOKEN_FILE_NAME
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            token = token_file.read_text().strip()
            assert token.startswith(LOCAL_TOKEN_PREFIX)
            printed = run_cli("config", "token", "--config", str(config))
            assert printed.returncode == 0, printed.stderr
            assert printed.stdout == token + "\n"

            refused = get(port)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "local_token_required"
            base_url = f"http://127.0.0.1:{port}/v1"
            # Each client is closed here: one left to the garbage collector closes its pooled
            # socket whenever a later test happens to run, which fails that test on a ResourceWarning.
            with (
                openai.OpenAI(base_url=base_url, api_key="sk-not-the-token-000000", max_retries=0) as client,
                pytest.raises(openai.AuthenticationError) as wrong,
            ):
                client.models.list()
            assert wrong.value.status_code == 401
            assert wrong.value.code == "local_token_invalid"
            assert "trayproxy config token" in wrong.value.message
            assert recorder.requests == [], "a refused request reached the target"

            with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as client:
                models = client.models.list()
            assert [model.id for model in models] == ["test-model"]
            assert status_of(port, **{"x-api-key": token}) == 200
            assert status_of(port, **{"api-key": token}) == 200
            assert len(recorder.requests) == 3
            for headers in recorder.requests:
                assert headers["authorization"] == f"Bearer {REAL_KEY}"
                assert "x-api-key" not in headers
                assert "api-key" not in headers

            with pytest.raises(InvalidStatus) as no_token:
                connect(f"ws://127.0.0.1:{port}/ws", open_timeout=CLIENT_TIMEOUT_S)
            assert no_token.value.response.status_code == 401
            assert recorder.handshakes == []
            with connect(
                f"ws://127.0.0.1:{port}/ws",
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=CLIENT_TIMEOUT_S,
            ) as ws:
                ws.send("hello")
                assert ws.recv(timeout=CLIENT_TIMEOUT_S) == "hello"
            (handshake,) = recorder.handshakes
            assert handshake["authorization"] == f"Bearer {REAL_KEY}"
            assert not any(token in value for value in recorder.header_values())
        finally:
            stderr = serve.stop()
    assert "local_token_required" in stderr  # the access log notes refusals, by code
    assert_never_leaked(token, stderr, "stderr")


def test_turning_it_on_in_the_file_and_rotating_the_token_apply_to_the_running_proxy(tmp_path: Path) -> None:
    """A running `trayproxy serve` starts asking for the token once the file says so, stops
    taking the old token once `config token --rotate` made a new one, and stops asking once the
    setting is off again, each without a restart; the token stays the same across a restart."""
    recorder = Recorder()
    port = free_port()
    with BackgroundServer(recording_app(recorder)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(config_text(upstream.url, port, require_token=False))
        serve = ServeProcess(config, env={KEY_VARIABLE: REAL_KEY})
        tokens: list[str] = []
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert status_of(port) == 200
            assert not (tmp_path / TOKEN_FILE_NAME).exists()  # made on first need only

            config.write_text(config_text(upstream.url, port, require_token=True))
            assert wait_until(lambda: status_of(port) == 401, timeout_s=SERVE_TIMEOUT_S), serve.stderr
            old = run_cli("config", "token", "--config", str(config)).stdout.strip()
            tokens.append(old)
            assert status_of(port, authorization=f"Bearer {old}") == 200

            rotated = run_cli("config", "token", "--rotate", "--config", str(config))
            assert rotated.returncode == 0, rotated.stderr
            assert "no longer works" in rotated.stderr
            new = rotated.stdout.strip()
            tokens.append(new)
            assert new != old
            assert new.startswith(LOCAL_TOKEN_PREFIX)
            assert stat.S_IMODE((tmp_path / TOKEN_FILE_NAME).stat().st_mode) == 0o600
            assert wait_until(
                lambda: status_of(port, authorization=f"Bearer {old}") == 401, timeout_s=SERVE_TIMEOUT_S
            ), serve.stderr
            assert get(port, authorization=f"Bearer {old}").json()["error"]["code"] == "local_token_invalid"
            assert status_of(port, authorization=f"Bearer {new}") == 200
        finally:
            stderr = serve.stop()

        serve = ServeProcess(config, env={KEY_VARIABLE: REAL_KEY})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            assert status_of(port, **{"x-api-key": new}) == 200  # the same token after a restart
            config.write_text(config_text(upstream.url, port, require_token=False))
            assert wait_until(lambda: status_of(port) == 200, timeout_s=SERVE_TIMEOUT_S), serve.stderr
        finally:
            stderr += serve.stop()
    for token in tokens:
        assert_never_leaked(token, stderr, "stderr")
        assert not any(token in value for value in recorder.header_values())


def test_the_tray_status_carries_the_token_and_its_copied_lines_work_in_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller (what the tray drives) exposes the token in its status, masked in any
    repr; the Copy environment lines built from it, pasted into sh, let the OpenAI SDK through,
    and the target sees its real key."""
    recorder = Recorder()
    with BackgroundServer(recording_app(recorder)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(config_text(upstream.url, 0, require_token=True))
        monkeypatch.setenv(KEY_VARIABLE, REAL_KEY)
        controller = ProxyController.from_config(ConfigBinding(config, watch=False))
        try:
            status = controller.start()
            assert status.local_token is not None
            token = status.local_token.reveal()
            assert token == (tmp_path / TOKEN_FILE_NAME).read_text().strip()
            assert token not in repr(status)
            assert status.local_url is not None
            lines = environment_lines(
                [Endpoint(status.local_url, status.key_headers, adds_key=True)], shell="posix", local_token=token
            )
            assert f"export OPENAI_API_KEY={token}\n" in lines
            # The one port serves a target that adds Authorization: no lines for the Anthropic SDK.
            assert "ANTHROPIC_API_KEY=" not in lines
            assert lines.startswith("# OPENAI_API_KEY holds TrayProxy's local access token, for your tools")
            script = lines + f'{sys.executable} -c "import openai; print(openai.OpenAI().models.list().data[0].id)"\n'
            result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        finally:
            controller.close(grace_s=0.5)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "test-model"
    (headers,) = recorder.requests
    assert headers["authorization"] == f"Bearer {REAL_KEY}"


def test_without_require_token_the_status_has_no_token_and_the_lines_keep_the_placeholder(
    tmp_path: Path,
) -> None:
    """Off (the default), nothing changes for the tray: no token is made or shown."""
    config = tmp_path / "config.toml"
    config.write_text(config_text("http://127.0.0.1:9", 0, require_token=False))
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        assert controller.status.local_token is None
    finally:
        controller.close(grace_s=0.5)
    assert not (tmp_path / TOKEN_FILE_NAME).exists()
    lines = environment_lines([Endpoint("http://127.0.0.1:8000", adds_key=True)], shell="powershell")
    assert '$env:OPENAI_API_KEY = "added-by-trayproxy"\n' in lines


def test_config_check_warns_that_a_keyless_target_gets_no_key_and_config_token_notes_it_is_off(
    tmp_path: Path,
) -> None:
    """`config check` says which targets get no credential once the client's key slot holds the
    token; `config token` on a file without require_token says the token is not asked for yet."""
    config = tmp_path / "config.toml"
    keyless = '[targets.ollama]\nurl = "http://127.0.0.1:11434"\n'
    config.write_text(config_text("http://127.0.0.1:9", 0, require_token=True, extra=keyless))
    checked = subprocess.run(
        [sys.executable, "-m", "desktop", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, KEY_VARIABLE: REAL_KEY},
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "warning: target 'ollama' adds no key of its own: with require_token" in checked.stderr
    assert "'keyed'" not in checked.stderr

    config.write_text(config_text("http://127.0.0.1:9", 0, require_token=False))
    printed = run_cli("config", "token", "--config", str(config))
    assert printed.returncode == 0
    assert printed.stdout.startswith(LOCAL_TOKEN_PREFIX)
    assert "require_token is off" in printed.stderr
    assert printed.stdout.strip() not in printed.stderr


def test_serve_with_a_target_url_asks_for_the_token_the_config_file_requires(tmp_path: Path) -> None:
    """`serve --target URL` takes only the listener settings from an existing config file; with
    `require_token = true` there, the token is made next to it (owner-only) as for a plain
    `serve`, and the proxy refuses requests without it and forwards those that send it."""
    recorder = Recorder()
    port = free_port()
    with BackgroundServer(recording_app(recorder)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(config_text("http://127.0.0.1:9", port, require_token=True))
        serve = ServeProcess(config, "--target", upstream.url, env={KEY_VARIABLE: REAL_KEY})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), serve.stderr
            token_file = tmp_path / TOKEN_FILE_NAME
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            token = token_file.read_text().strip()
            assert status_of(port) == 401
            assert status_of(port, authorization=f"Bearer {token}") == 200
            assert len(recorder.requests) == 1
        finally:
            stderr = serve.stop()
    assert_never_leaked(token, stderr, "stderr")
