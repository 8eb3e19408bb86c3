"""`trayproxy config test`: one line saying whether a target is reachable and takes the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from background import BackgroundServer
from upstreams import dead_port


def _models_app(status: int) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tptest-good-key":
            return web.json_response({"error": "bad key"}, status=401)
        return web.json_response({"data": []}, status=status)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


def _run(config: Path, *args: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "desktop", "config", "test", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TP_PROBE_KEY": key},
    )


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'active = "mine"\n[targets.mine]\nurl = "{url}"\nkey = {{ env = "TP_PROBE_KEY" }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    return path


@pytest.mark.parametrize(
    ("status", "key", "expected", "code"),
    [
        (200, "tptest-good-key", "mine: reachable, key accepted (HTTP 200, ", 0),
        (200, "tptest-wrong-key", "mine: reachable, but the key was rejected (HTTP 401, ", 1),
        (429, "tptest-good-key", "mine: reachable, but rate limited (HTTP 429, ", 1),
    ],
)
def test_config_test_reports_key_and_reachability(
    tmp_path: Path, status: int, key: str, expected: str, code: int
) -> None:
    """The person learns in one line whether the key works, with the latency, and never
    sees the key itself."""
    with BackgroundServer(_models_app(status)) as upstream:
        result = _run(_config(tmp_path, upstream.url), key=key)
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith(expected), result.stdout
    assert result.stdout.rstrip().endswith(" ms)")
    assert key not in result.stdout + result.stderr


def test_config_test_reports_an_unreachable_target(tmp_path: Path) -> None:
    """A target where nothing listens is reported as not reachable, with the cause."""
    result = _run(_config(tmp_path, f"http://127.0.0.1:{dead_port()}"), "mine", key="tptest-good-key")
    assert result.returncode == 1
    assert "mine: not reachable" in result.stdout
    assert "refused" in result.stdout


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://api.openai.com", "/v1/models"),
        ("http://127.0.0.1:8080/v1", "/models"),
        ("https://my-res.openai.azure.com/openai", "/models?api-version=2024-10-21"),
        ("https://my-res.openai.azure.com", "/openai/models?api-version=2024-10-21"),
        ("https://my-res.cognitiveservices.azure.com/openai", "/models?api-version=2024-10-21"),
    ],
)
def test_probe_asks_each_provider_for_its_own_model_list(url: str, path: str) -> None:
    """Azure OpenAI has no /v1 and needs an api-version; a /v1 base is not doubled."""
    from desktop.config.model import Target
    from desktop.engine.probe import probe_path

    target = Target(url=url)
    assert probe_path(target, target.base_path) == path


def _open_app() -> web.Application:
    """A model list that needs no key (a local Ollama or vLLM): 200 whatever is sent."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [], "authorization": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


def _write(tmp_path: Path, target_lines: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'active = "mine"\n[targets.mine]\n{target_lines}')
    return path


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (
            'key = { env = "TP_PROBE_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n',
            "the environment variable TP_PROBE_KEY is not set or empty",
        ),
        ("", "target 'mine' has no key"),
        ('key = { command = "exit 3" }\nheaders = { Authorization = "Bearer {key}" }\n', "the key command exited with status 3"),
        ('key = { env = "TP_PROBE_KEY" }\n', "no header uses {key}"),
    ],
    ids=["env-unset", "no-key", "command-failed", "key-unused"],
)
def test_config_test_does_not_credit_a_key_it_did_not_send(tmp_path: Path, lines: str, why: str) -> None:
    """A 200 from a target that got no key says "reachable" and why no key went, never
    "key accepted" (a person would think their key works)."""
    with BackgroundServer(_open_app()) as upstream:
        path = _write(tmp_path, f'url = "{upstream.url}"\n{lines}')
        result = _run(path, key="")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("mine: reachable (HTTP 200, "), line
    assert "key accepted" not in line
    assert f" ms); no key sent: {why}" in line


def test_config_test_says_a_401_without_a_key_asks_for_one(tmp_path: Path) -> None:
    with BackgroundServer(_models_app(200)) as upstream:
        path = _write(tmp_path, f'url = "{upstream.url}"\n')
        result = _run(path, key="")
    assert result.returncode == 1
    line = result.stdout.strip()
    assert line.startswith("mine: reachable, but it asks for a key (HTTP 401, "), line
    assert "rejected" not in line
    assert "; no key sent: target 'mine' has no key" in line


def test_config_test_credits_a_credential_header_written_in_the_file(tmp_path: Path) -> None:
    """A literal Authorization header (no key source) is a key sent, accepted on a 200."""
    with BackgroundServer(_models_app(200)) as upstream:
        path = _write(tmp_path, f'url = "{upstream.url}"\nheaders = {{ Authorization = "Bearer tptest-good-key" }}\n')
        result = _run(path, key="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mine: reachable, key accepted (HTTP 200, ")
    assert "no key sent" not in result.stdout
