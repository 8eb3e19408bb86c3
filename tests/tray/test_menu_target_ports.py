"""The tray menu lists the targets served on ports of their own (pystray's dummy backend)."""

from __future__ import annotations

import os
import urllib.request
from dataclasses import replace
from pathlib import Path

import pystray
import pytest
from background import BackgroundServer, free_port
from cli_process import run_cli
from upstreams import Seen, echo_app

from desktop.clients import PLACEHOLDER_KEY
from desktop.controller import ConfigBinding, ProxyController, ProxyStatus, TargetPort
from desktop.tray.app import TrayApp
from desktop.tray.menu import TrayView, build_menu, target_port_lines

RUNNING = ProxyStatus(
    "running",
    "openai",
    "https://api.openai.com",
    addresses=(("127.0.0.1", 8000), ("::1", 8000)),
    targets=("openai", "anthropic", "ollama"),
    target_ports=(
        TargetPort("anthropic", "https://api.anthropic.com", 8001, addresses=(("127.0.0.1", 8001), ("::1", 8001))),
        TargetPort(
            "ollama",
            "http://127.0.0.1:11434",
            8002,
            error="Port 8002 on 127.0.0.1 is already in use by another program; choose another port"
            " — held by nc (pid 4242)",
        ),
    ),
)


def texts(menu: pystray.Menu) -> list[str]:
    return [item.text for item in menu.items if item is not pystray.Menu.SEPARATOR]


def test_each_target_port_gets_a_line_under_the_status_line() -> None:
    menu = build_menu(TrayView(RUNNING, "1"), lambda action, arg: None)
    lines = texts(menu)
    # The taken port is also the status line's problem, so the icon's tooltip says it too.
    assert lines[0].startswith("TrayProxy: running on 127.0.0.1:8000 → openai — ollama on port 8002: Port 8002")
    assert lines[1] == "anthropic on 127.0.0.1:8001"
    assert lines[2].startswith("ollama: port 8002 not open — Port 8002 on 127.0.0.1 is already in use")
    assert len(lines[2]) <= 90
    assert lines[3] == "Stop proxy"
    assert not [item for item in menu.items if item.text in lines[1:3] and item.enabled]


def test_the_full_reason_stays_available_and_nothing_shows_when_stopped() -> None:
    assert target_port_lines(RUNNING)[1].endswith("held by nc (pid 4242)")
    stopped = replace(RUNNING, state="stopped", addresses=())
    assert target_port_lines(stopped) == []
    assert texts(build_menu(TrayView(stopped, "1"), lambda action, arg: None))[1] == "Start proxy"


SHELLS = ["POSIX shell (bash, zsh)", "PowerShell", "fish", "Command Prompt (cmd)"]


def test_copy_environment_offers_four_shells_and_each_listening_own_port() -> None:
    """Copy environment ▸ has four shells (POSIX, PowerShell, fish, cmd), then a submenu with
    the same four per target that listens on its own port (not for one whose port is taken),
    each asking for that target's lines."""
    asked: list[tuple[str, str | None]] = []
    menu = build_menu(TrayView(RUNNING, "1"), lambda action, arg: asked.append((action, arg)))
    copy_env = next(item for item in menu.items if item.text == "Copy environment").submenu
    assert texts(copy_env) == [*SHELLS, "anthropic on port 8001"]
    for item in copy_env.items[:4]:
        item(None)
    assert asked == [("copy-env", shell) for shell in ("posix", "powershell", "fish", "cmd")]
    own = copy_env.items[-1].submenu
    assert texts(own) == SHELLS
    for item in own.items:
        item(None)
    assert asked[4:] == [("copy-env", f"{shell}:anthropic") for shell in ("posix", "powershell", "fish", "cmd")]


@pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")
def test_own_port_lines_point_the_sdks_at_that_port_and_reach_its_target(
    tmp_path: Path, clipboard: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copied lines for a target on its own port name that port, carry a placeholder key
    when the proxy adds that target's key, and a request built from them reaches that target
    while the main port serves another."""
    main_seen, own_seen = Seen(), Seen()
    monkeypatch.setenv("OWN_PORT_TEST_KEY", "sk-own-port-test-key")
    own_port = free_port()
    with BackgroundServer(echo_app(main_seen)) as main, BackgroundServer(echo_app(own_seen)) as own:
        config = tmp_path / "config.toml"
        config.write_text(
            'active = "main"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
            f'[targets.main]\nurl = "{main.url}"\n'
            f'[targets.claude]\nurl = "{own.url}"\nport = {own_port}\n'
            'key = { env = "OWN_PORT_TEST_KEY" }\nheaders = { x-api-key = "{key}" }\n'
        )
        controller = ProxyController.from_config(ConfigBinding(config, watch=False))
        try:
            controller.start()
            TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", "posix:claude")
            lines = dict(
                line.removeprefix("export ").split("=", 1)
                for line in clipboard.read_text().splitlines()
                if not line.startswith("#")
            )
            assert lines["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{own_port}"
            assert lines["OPENAI_BASE_URL"] == f"http://127.0.0.1:{own_port}/v1"
            assert lines["ANTHROPIC_API_KEY"] == PLACEHOLDER_KEY
            request = urllib.request.Request(
                lines["ANTHROPIC_BASE_URL"] + "/v1/messages", headers={"x-api-key": lines["ANTHROPIC_API_KEY"]}
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200
        finally:
            controller.close(grace_s=0.5)
    assert [request["raw_path"] for request in own_seen.requests] == ["/v1/messages"]
    assert ["x-api-key", "sk-own-port-test-key"] in own_seen.requests[0]["headers"]  # type: ignore[operator]
    assert main_seen.requests == []


def copied_variables(clipboard: Path) -> dict[str, str]:
    """The copied lines' variables; the comment lines (``# ...``, for the person) left out."""
    lines = clipboard.read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if not line.startswith("#"))


@pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")
@pytest.mark.parametrize("claude_key", ["readable", "unset"])
def test_copy_environment_points_each_sdk_at_the_port_of_the_target_made_for_it(
    tmp_path: Path, clipboard: Path, monkeypatch: pytest.MonkeyPatch, claude_key: str
) -> None:
    """The main Copy environment ▸ POSIX lines, with an OpenAI-style target chosen and an
    Anthropic-style one (headers set x-api-key) on its own port: ANTHROPIC_BASE_URL is that
    port, not the main one (where the Anthropic SDK's requests reached the OpenAI target), and
    OPENAI_BASE_URL the main port; requests made from them reach the right target. So too when
    the Anthropic key cannot be read: the port is still the one made for it."""
    main_seen, own_seen = Seen(), Seen()
    monkeypatch.setenv("MAIN_PORT_TEST_KEY", "sk-main-port-test-key")
    if claude_key == "readable":
        monkeypatch.setenv("OWN_PORT_TEST_KEY", "sk-own-port-test-key")
    main_port, own_port = free_port(), free_port()
    with BackgroundServer(echo_app(main_seen)) as main, BackgroundServer(echo_app(own_seen)) as own:
        config = tmp_path / "config.toml"
        config.write_text(
            f'active = "main"\n[listen]\nhosts = ["127.0.0.1"]\nport = {main_port}\n'
            f'[targets.main]\nurl = "{main.url}"\n'
            'key = { env = "MAIN_PORT_TEST_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
            f'[targets.claude]\nurl = "{own.url}"\nport = {own_port}\n'
            'key = { env = "OWN_PORT_TEST_KEY" }\nheaders = { x-api-key = "{key}" }\n'
        )
        controller = ProxyController.from_config(ConfigBinding(config, watch=False))
        try:
            controller.start()
            TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", "posix")
            lines = copied_variables(clipboard)
            assert lines["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{own_port}"
            assert lines["OPENAI_BASE_URL"] == f"http://127.0.0.1:{main_port}/v1"
            assert lines["OPENAI_API_KEY"] == PLACEHOLDER_KEY
            assert lines.get("ANTHROPIC_API_KEY") == (PLACEHOLDER_KEY if claude_key == "readable" else None)
            for url in (lines["ANTHROPIC_BASE_URL"] + "/v1/messages", lines["OPENAI_BASE_URL"] + "/models"):
                with urllib.request.urlopen(url, timeout=5) as answer:
                    assert answer.status == 200
        finally:
            controller.close(grace_s=0.5)
    assert [request["raw_path"] for request in own_seen.requests] == ["/v1/messages"]
    assert [request["raw_path"] for request in main_seen.requests] == ["/v1/models"]


@pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")
@pytest.mark.parametrize("shell", ["posix", "powershell", "fish", "cmd"])
def test_trayproxy_env_prints_the_lines_the_menu_copies(
    tmp_path: Path, clipboard: Path, monkeypatch: pytest.MonkeyPatch, shell: str
) -> None:
    """`trayproxy env --shell SHELL` prints, for the config file, what Copy environment ▸ SHELL
    puts on the clipboard while that config runs: one function makes both."""
    monkeypatch.setenv("OWN_PORT_TEST_KEY", "sk-own-port-test-key")
    main_port, own_port = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'active = "local"\n[listen]\nhosts = ["127.0.0.1"]\nport = {main_port}\n'
        '[targets.local]\nurl = "http://127.0.0.1:9"\n'
        f'[targets.claude]\nurl = "http://127.0.0.1:9"\nport = {own_port}\n'
        'key = { env = "OWN_PORT_TEST_KEY" }\nheaders = { x-api-key = "{key}" }\n'
    )
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        controller.start()
        TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", shell)
    finally:
        controller.close(grace_s=0.5)
    printed = run_cli("env", "--shell", shell, "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == clipboard.read_text()
    assert f"http://127.0.0.1:{own_port}" in printed.stdout


@pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")
def test_with_the_first_run_config_the_anthropic_sdk_is_not_sent_to_the_openai_target(
    tmp_path: Path, clipboard: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first-run file serves only the main port, with the openai target (adds
    Authorization); anthropic's `port = 8001` is a comment. `trayproxy env` and Copy environment
    gave ANTHROPIC_BASE_URL the main port, so the Anthropic SDK talked to OpenAI. Now both leave
    the Anthropic lines out and say, in a comment, how to give anthropic its port."""
    from desktop.config.store import DEFAULT_CONFIG

    monkeypatch.setenv("OPENAI_API_KEY", "sk-first-run-test-key-0123456789")
    main_port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(DEFAULT_CONFIG.replace("port = 8000", f"port = {main_port}", 1))
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        controller.start()
        TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", "posix")
    finally:
        controller.close(grace_s=0.5)
    printed = run_cli("env", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == clipboard.read_text()
    assert copied_variables(clipboard) == {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{main_port}/v1",
        "OPENAI_API_BASE": f"http://127.0.0.1:{main_port}/v1",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
    }
    assert (
        "# no ANTHROPIC_BASE_URL line: the main port serves 'openai', which adds Authorization, not x-api-key;"
        ' give \'anthropic\' a prefix (prefix = "/anthropic" under [targets.anthropic]),'
        f" a port of its own (port = {main_port + 1})"
    ) in printed.stdout  # 8001 beside the usual 8000
