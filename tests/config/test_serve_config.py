"""`trayproxy serve` with a config file: the active or named target, its key, its port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from background import BackgroundServer, free_port, wait_until
from listen_helpers import proxy_answers
from upstreams import Seen, echo_app


def _serve(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "desktop", "serve", "--config", str(config), *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    return stderr


def test_serve_without_target_uses_the_configs_active_target_key_and_port(tmp_path: Path) -> None:
    """With a config file, `trayproxy serve` alone listens on the file's port and sends
    requests to the active target with its key from the environment."""
    seen = Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(
            f'active = "local"\n[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
            f'[targets.other]\nurl = "http://127.0.0.1:9"\n'
            f'[targets.local]\nurl = "{upstream.url}/base"\nkey = {{ env = "TP_SERVE_KEY" }}\n'
            'headers = { Authorization = "Bearer {key}" }\n'
        )
        proc = _serve(config, env={"TP_SERVE_KEY": "tpkey-0123456789"})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=1.0), timeout_s=15)
            response = httpx.get(f"http://127.0.0.1:{port}/v1/models", trust_env=False)
        finally:
            stderr = _stop(proc)
    assert response.status_code == 200
    assert seen.requests[-1]["raw_path"] == "/base/v1/models"
    assert ["Authorization", "Bearer tpkey-0123456789"] in seen.requests[-1]["headers"]
    assert "tpkey-0123456789" not in stderr


def test_serve_target_name_picks_a_config_target_and_warns_of_a_missing_key(tmp_path: Path) -> None:
    """`--target NAME` serves that target; when its key variable is unset the log says so and
    the client's own Authorization reaches the target."""
    seen = Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen)) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(
            f'active = "other"\n[targets.other]\nurl = "http://127.0.0.1:9"\n'
            f'[targets.local]\nurl = "{upstream.url}"\nkey = {{ env = "TP_UNSET_KEY" }}\n'
            'headers = { Authorization = "Bearer {key}" }\n'
        )
        proc = _serve(config, "--target", "local", "--port", str(port), "--host", "127.0.0.1")
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=1.0), timeout_s=15)
            response = httpx.get(
                f"http://127.0.0.1:{port}/x", headers={"Authorization": "Bearer client-own"}, trust_env=False
            )
        finally:
            stderr = _stop(proc)
    assert response.status_code == 200
    assert ["Authorization", "Bearer client-own"] in seen.requests[-1]["headers"]
    assert "TP_UNSET_KEY is not set" in stderr


def test_serve_with_a_broken_config_reports_file_line_and_exits_2(tmp_path: Path) -> None:
    """A mistake in the file stops `serve` with the place to fix, before anything listens."""
    config = tmp_path / "config.toml"
    config.write_text('[targets.local]\nurl = "http://127.0.0.1:9"\nread_timout = 5\n')
    result = subprocess.run(
        [sys.executable, "-m", "desktop", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{config}:3:1: unknown setting 'targets.local.read_timout'" in result.stderr
