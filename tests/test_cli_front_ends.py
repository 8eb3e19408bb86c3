"""The front ends' plumbing, as a person starts them: where the config comes from, where the log goes.

``trayproxy --config PATH COMMAND`` used to drop PATH silently (only the tray read it), so
``config path`` printed the default file and ``serve`` served it. And the tray falling back to
no icon (no desktop session) used to set logging up again for stderr only: after "running
without a tray icon" nothing reached the log file, where a person started from a menu looks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from background import BackgroundServer, free_port, wait_until
from cli_process import run_cli
from listen_helpers import PortHolder, proxy_answers
from upstreams import Seen, dead_port, echo_app

# A Python start with aiohttp on a busy machine; a healthy one answers in well under a second.
STARTUP_TIMEOUT_S = 15.0
EXIT_TIMEOUT_S = 15.0


def _config(path: Path, url: str, port: int) -> Path:
    path.write_text(f'active = "mine"\n[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n[targets.mine]\nurl = "{url}"\n')
    return path


def _run_until_served(argv: list[str], port: int, env: dict[str, str], path: str) -> tuple[int, str]:
    """Start ``argv``, GET ``path`` through it once it answers, stop it; (status, its stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "desktop", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if not wait_until(lambda: process.poll() is not None or proxy_answers(port, timeout_s=1.0), timeout_s=STARTUP_TIMEOUT_S):
            pytest.fail("the proxy did not answer")
        assert process.poll() is None, "it exited early"
        status = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5.0, trust_env=False).status_code
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT_S)
    return status, stderr


def test_config_before_the_command_names_the_file_config_path_prints(tmp_path: Path) -> None:
    chosen = tmp_path / "c2.toml"
    result = run_cli("--config", str(chosen), "config", "path")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(chosen)


def test_config_before_serve_is_the_file_it_serves(tmp_path: Path) -> None:
    """`trayproxy --config c2.toml serve` serves c2.toml's target on c2.toml's port."""
    seen = Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen)) as upstream:
        config = _config(tmp_path / "c2.toml", upstream.url, port)
        status, stderr = _run_until_served(["--config", str(config), "serve"], port, dict(os.environ), "/from-c2")
    assert status == 200, stderr
    assert [r["raw_path"] for r in seen.requests] == ["/from-c2"]


def test_config_given_before_and_after_the_command_must_agree(tmp_path: Path) -> None:
    same = run_cli("--config", str(tmp_path / "a.toml"), "config", "path", "--config", str(tmp_path / "a.toml"))
    assert same.returncode == 0
    assert same.stdout.strip() == str(tmp_path / "a.toml")
    differ = run_cli("--config", str(tmp_path / "a.toml"), "config", "path", "--config", str(tmp_path / "b.toml"))
    assert differ.returncode == 2
    assert "--config is given twice" in differ.stderr
    assert differ.stdout == ""


def test_the_tray_without_a_desktop_session_keeps_logging_to_its_file(tmp_path: Path) -> None:
    """No DISPLAY: the tray serves without an icon, and the listening line, the request lines
    and its errors land in ~/.local/state/TrayProxy/log/trayproxy.log as well as on stderr."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with BackgroundServer(echo_app()) as upstream:
        config = _config(tmp_path / "config.toml", upstream.url, port)
        status, stderr = _run_until_served(["--config", str(config)], port, env, "/logged-request")
    assert status == 200
    log_file = Path(os.environ["XDG_STATE_HOME"]) / "TrayProxy" / "log" / "trayproxy.log"
    logged = log_file.read_text(encoding="utf-8")
    assert "running without a tray icon" in logged
    # The README's normal fallback on a server: a warning, not an error.
    (why,) = [line for line in logged.splitlines() if "No desktop session" in line]
    assert " WARNING trayproxy.cli: No desktop session: neither DISPLAY nor WAYLAND_DISPLAY is set" in why
    assert [line for line in logged.splitlines() if " ERROR " in line] == []
    for line in (f"listening on http://127.0.0.1:{port}", '"GET /logged-request" -> mine 200', "stopped"):
        assert line in logged, logged
        assert line in stderr


def test_the_tray_without_a_desktop_session_is_one_instance_that_uninstall_sees(tmp_path: Path) -> None:
    """Serving without an icon is still the one TrayProxy of this user: a second start says it
    is already running and leaves (instead of failing on the taken port), and `trayproxy
    uninstall` says it is still running, as it does for the tray."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with BackgroundServer(echo_app()) as upstream:
        config = _config(tmp_path / "config.toml", upstream.url, port)
        first = subprocess.Popen(
            [sys.executable, "-m", "desktop", "--config", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_until(
                lambda: first.poll() is not None or proxy_answers(port, timeout_s=1.0),
                timeout_s=STARTUP_TIMEOUT_S,
            )
            assert first.poll() is None, "the first one exited"
            second = subprocess.run(
                [sys.executable, "-m", "desktop", "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                timeout=STARTUP_TIMEOUT_S,
            )
            assert second.returncode == 0, second.stderr
            assert "TrayProxy is already running" in second.stderr
            uninstall = run_cli("uninstall")
            assert "TrayProxy is still running" in uninstall.stderr
            assert proxy_answers(port, timeout_s=1.0)
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(EXIT_TIMEOUT_S)


def test_the_tray_without_a_desktop_session_names_only_the_file_for_a_taken_port(tmp_path: Path) -> None:
    """Started with no command (the tray, here serving without an icon), a port another program
    holds is to be changed in the file's [listen] table: the message does not say 'start with
    --port', a flag of `serve` that the tray's start has not got."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    config = _config(tmp_path / "config.toml", f"http://127.0.0.1:{dead_port()}", port)
    with PortHolder(port) as holder:
        result = run_cli("--config", str(config), env=env)
    assert result.returncode == 1, result.stderr
    assert (
        f"Port {port} on 127.0.0.1 is already in use by another program; choose another port"
        f" (set port under [listen] in {config}) — held by python (pid {holder.pid})"
    ) in result.stderr
    assert "--port" not in result.stderr


def test_the_tray_runs_with_every_serve_flag_at_its_default() -> None:
    """The tray takes none of serve's flags but runs the proxy the way serve does: each flag
    serve has reaches it at the value serve gets when the flag is left out. A flag added to
    serve and not here would stop the tray, and its no-icon fallback, with an AttributeError."""
    from desktop.cli import _build_parser
    from desktop.commands.tray import tray_args

    serve = vars(_build_parser().parse_args(["serve"]))
    tray = vars(tray_args("chosen.toml"))
    assert tray.pop("command") is None
    assert tray.pop("config") == "chosen.toml"
    del serve["command"], serve["tray_config"], serve["config"]
    assert tray == serve
