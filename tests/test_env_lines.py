"""`trayproxy env` as a new user runs it: `eval "$(trayproxy env)"` in a real shell, then tools,
or TrayProxy itself, started from that shell.

The lines are for tools: the key variables get TrayProxy's placeholder, which the proxy replaces
with the real key. TrayProxy reads its own keys from those same variables, so one started from
such a shell must not take the placeholder for a key (it would send it on and get a 401).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from background import BackgroundServer, free_port, wait_until
from cli_process import ServeProcess
from listen_helpers import proxy_answers
from upstreams import Seen, echo_app

from desktop.clients import PLACEHOLDER_KEY
from desktop.controller import ConfigBinding, ProxyController

REAL_KEY = "sk-real-key-of-the-person-3f9a1c"
SERVE_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 10.0
SHELL_TIMEOUT_S = 60.0
WHY = "OPENAI_API_KEY holds TrayProxy's placeholder (set by `trayproxy env` / Copy environment), not your key"


def trayproxy(*args: str) -> str:
    """The command line a shell runs for ``trayproxy ARGS`` from this checkout."""
    return shlex.join([sys.executable, "-m", "desktop", *args])


def run_sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=SHELL_TIMEOUT_S)


def openai_config(path: Path, upstream_url: str, port: int) -> None:
    """The first-run file's openai target (key from OPENAI_API_KEY), at ``upstream_url``."""
    path.write_text(
        f'active = "openai"\n[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n'
        f'[targets.openai]\nurl = "{upstream_url}"\n'
        'key = { env = "OPENAI_API_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
    )


def authorizations(seen: Seen) -> list[str]:
    return [
        value
        for request in seen.requests
        for name, value in request["headers"]  # type: ignore[attr-defined]
        if name.lower() == "authorization"
    ]


@pytest.mark.skipif(os.name != "posix", reason="the story runs in sh")
def test_trayproxy_started_from_a_shell_that_ran_env_says_the_key_is_its_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export OPENAI_API_KEY=<real>; eval "$(trayproxy env)"` leaves the placeholder in
    OPENAI_API_KEY (the eval'd lines say so in a comment the shell skips). `config check` from
    that shell, `trayproxy serve` started from it and the tray's status count that as no key and
    say why and what to do, and the target never gets the placeholder as TrayProxy's key."""
    seen = Seen()
    port = free_port()
    with BackgroundServer(echo_app(seen)) as upstream:
        config = tmp_path / "config.toml"
        openai_config(config, upstream.url, port)
        printed = run_sh(trayproxy("env", "--config", str(config)))
        assert printed.returncode == 0, printed.stderr
        comment = printed.stdout.splitlines()[0]
        assert comment.startswith("# OPENAI_API_KEY"), printed.stdout
        assert "placeholder" in comment

        shell = run_sh(
            f"export OPENAI_API_KEY={REAL_KEY}\n"
            f'eval "$({trayproxy("env", "--config", str(config))})"\n'
            f"{trayproxy('config', 'check', '--config', str(config))}\n"
            'echo "checked: $?"\n'
            'echo "OPENAI_API_KEY=$OPENAI_API_KEY"\n'
        )
        assert f"OPENAI_API_KEY={PLACEHOLDER_KEY}\n" in shell.stdout, shell.stdout + shell.stderr
        assert WHY in shell.stderr
        assert "start TrayProxy where OPENAI_API_KEY is your real key" in shell.stderr

        serve = ServeProcess(config, env={"OPENAI_API_KEY": PLACEHOLDER_KEY})
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S), (
                serve.stderr
            )
            answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", trust_env=False, timeout=CLIENT_TIMEOUT_S)
            assert answer.status_code == 200
        finally:
            log = serve.stop()
        assert WHY in log
        assert f"Bearer {PLACEHOLDER_KEY}" not in authorizations(seen)

        monkeypatch.setenv("OPENAI_API_KEY", PLACEHOLDER_KEY)
        controller = ProxyController.from_config(ConfigBinding(config, watch=False))
        try:
            status = controller.status
        finally:
            controller.close(grace_s=0.5)
        assert status.key_problem is not None
        assert WHY in status.key_problem
        assert status.problem == status.key_problem  # the tray's tooltip and red icon


def test_serve_says_so_when_a_target_on_its_own_port_holds_the_placeholder(tmp_path: Path) -> None:
    """Not only the chosen target: an anthropic target served on a port of its own whose
    variable holds the placeholder (or is empty) is named in serve's log when it starts, as
    config check and the tray name it; before, serve said nothing and forwarded the placeholder."""
    main_port, own_port = free_port(), free_port()
    with BackgroundServer(echo_app(Seen())) as upstream:
        config = tmp_path / "config.toml"
        openai_config(config, upstream.url, main_port)
        with config.open("a") as file:
            file.write(
                f'[targets.anthropic]\nurl = "{upstream.url}"\nport = {own_port}\n'
                'key = { env = "ANTHROPIC_API_KEY" }\nheaders = { x-api-key = "{key}" }\n'
            )
        serve = ServeProcess(
            config, env={"OPENAI_API_KEY": REAL_KEY, "ANTHROPIC_API_KEY": PLACEHOLDER_KEY}
        )
        try:
            assert wait_until(
                lambda: proxy_answers(own_port, timeout_s=CLIENT_TIMEOUT_S), timeout_s=SERVE_TIMEOUT_S
            ), serve.stderr
        finally:
            log = serve.stop()
    assert "ANTHROPIC_API_KEY holds TrayProxy's placeholder" in log, log
    assert "OPENAI_API_KEY holds" not in log


@pytest.mark.skipif(os.name != "posix", reason="runs the printed lines in sh")
def test_env_with_require_token_gives_the_sdks_the_local_token(tmp_path: Path) -> None:
    """With `require_token = true` and no token made yet, `trayproxy env` makes the token (as
    the proxy would on start) and the pasted lines hand it to the SDK as its key; a second run
    prints the same token, the one in the file next to the config."""
    config = tmp_path / "config.toml"
    openai_config(config, "http://127.0.0.1:9", free_port())
    config.write_text(config.read_text() + "[security]\nrequire_token = true\n")
    shown = [
        run_sh(f'eval "$({trayproxy("env", "--config", str(config))})"; printf %s "$OPENAI_API_KEY"')
        for _ in range(2)
    ]
    token = (tmp_path / "local-token").read_text().strip()
    assert token.startswith("tp-local-")
    assert [run.stdout for run in shown] == [token, token], [run.stderr for run in shown]
