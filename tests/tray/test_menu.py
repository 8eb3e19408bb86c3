"""The tray menu model on pystray's dummy backend: what a person sees in each state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pystray
from background import BackgroundServer, free_port
from upstreams import Seen, echo_app

from desktop.clients import PLACEHOLDER_KEY, Endpoint, environment_lines
from desktop.controller import ProxyStatus
from desktop.engine.condition import TargetCondition
from desktop.tray.menu import TrayView, build_menu, status_line

RUNNING = ProxyStatus(
    "running",
    "openai",
    "https://api.openai.com",
    addresses=(("127.0.0.1", 8000), ("::1", 8000)),
    targets=("openai", "anthropic", "ollama"),
    config_path="/home/me/.config/TrayProxy/config.toml",
)


def items(menu: pystray.Menu) -> list[pystray.MenuItem]:
    return [item for item in menu.items if item is not pystray.Menu.SEPARATOR]


def by_text(menu: pystray.Menu) -> dict[str, pystray.MenuItem]:
    return {item.text: item for item in items(menu)}


def test_running_menu_shows_where_requests_go_and_offers_stop() -> None:
    """The first line says running, the address and the target; the default action stops."""
    calls: list[tuple[str, str | None]] = []
    menu = build_menu(TrayView(RUNNING, "1.2.3"), lambda a, b: calls.append((a, b)))
    entries = items(menu)
    assert entries[0].text == "TrayProxy: running on 127.0.0.1:8000 → openai"
    assert not entries[0].enabled
    named = by_text(menu)
    assert named["Stop proxy"].default
    named["Stop proxy"](None)
    assert calls == [("toggle", None)]
    assert named["Copy local URL"].enabled
    assert named["About TrayProxy 1.2.3"].enabled
    assert [i.text for i in entries][-1] == "Quit"


def test_target_submenu_has_one_radio_item_per_target_with_the_active_checked() -> None:
    calls: list[tuple[str, str | None]] = []
    menu = build_menu(TrayView(RUNNING, "1"), lambda a, b: calls.append((a, b)))
    submenu = by_text(menu)["Target"].submenu
    assert submenu is not None
    targets = items(submenu)
    assert [t.text for t in targets] == ["openai", "anthropic", "ollama"]
    assert [t.checked for t in targets] == [True, False, False]
    assert all(t.radio for t in targets)
    targets[2](None)
    assert calls == [("target", "ollama")]


def test_stopped_menu_offers_start_and_disables_copying() -> None:
    stopped = ProxyStatus("stopped", "openai", "https://api.openai.com", targets=("openai",))
    named = by_text(build_menu(TrayView(stopped, "1"), lambda a, b: None))
    assert "Start proxy" in named
    assert named["Start proxy"].default
    assert not named["Copy local URL"].enabled
    assert not named["Copy environment"].enabled
    assert status_line(stopped) == "TrayProxy: stopped (openai)"


def test_error_states_show_the_problem_in_the_status_line() -> None:
    """A taken port, a broken config edit or a rejected key stays visible until it clears."""
    taken = ProxyStatus("error", "openai", "u", error="Port 8000 is in use by another program (nginx)")
    assert status_line(taken) == "TrayProxy: not running — Port 8000 is in use by another program (nginx)"
    broken = ProxyStatus(
        "running",
        "openai",
        "u",
        addresses=(("127.0.0.1", 8000),),
        config_error="/c.toml:3:1: unknown setting 'portt'\nmore",
    )
    assert "the config file has an error: /c.toml:3:1: unknown setting 'portt'" in status_line(broken)
    rejected = ProxyStatus(
        "running",
        "openai",
        "u",
        addresses=(("127.0.0.1", 8000),),
        condition=TargetCondition("openai", "key_rejected", "openai rejected the key (HTTP 401)", 401),
    )
    assert status_line(rejected).endswith("openai rejected the key (HTTP 401)")
    first = items(build_menu(TrayView(rejected, "1"), lambda a, b: None))[0]
    assert "rejected the key" in first.text


def test_start_at_login_is_a_checkbox_reflecting_the_os_entry() -> None:
    off = by_text(build_menu(TrayView(RUNNING, "1", autostart=False), lambda a, b: None))["Start at login"]
    on = by_text(build_menu(TrayView(RUNNING, "1", autostart=True), lambda a, b: None))["Start at login"]
    assert (off.checked, on.checked) == (False, True)


MAIN = Endpoint("http://127.0.0.1:8000", frozenset({"authorization"}), adds_key=True)


def test_environment_lines_for_each_shell() -> None:
    posix = environment_lines([MAIN], shell="posix")
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8000/v1\n" in posix
    assert "export OPENAI_API_BASE=http://127.0.0.1:8000/v1\n" in posix
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:8000\n" in posix
    assert f"export OPENAI_API_KEY={PLACEHOLDER_KEY}\n" in posix
    ps = environment_lines([Endpoint("http://127.0.0.1:8000")], shell="powershell")
    assert '$env:OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"\n' in ps
    assert "API_KEY" not in ps
    fish = environment_lines([MAIN], shell="fish").splitlines()
    assert fish[0].startswith("# OPENAI_API_KEY, ANTHROPIC_API_KEY hold a placeholder, for your tools")
    assert fish[1] == "set -gx OPENAI_BASE_URL http://127.0.0.1:8000/v1"
    assert (
        environment_lines([MAIN], shell="cmd").splitlines()[-1] == f"set ANTHROPIC_API_KEY={PLACEHOLDER_KEY}"
    )


def test_each_sdk_gets_the_port_of_the_target_made_for_it() -> None:
    """OpenAI-style SDKs (Authorization) and Anthropic's (x-api-key) each get the first address
    whose target takes its key in their header; else one whose target takes none; else the main."""
    claude = Endpoint("http://127.0.0.1:8001", frozenset({"x-api-key"}), adds_key=True)
    ollama = Endpoint("http://127.0.0.1:8002")

    def urls(*endpoints: Endpoint) -> tuple[str, str]:
        lines = dict(
            line.removeprefix("export ").split("=", 1)
            for line in environment_lines(endpoints, shell="posix").splitlines()
            if not line.startswith("#")
        )
        return lines["OPENAI_BASE_URL"].removesuffix("/v1"), lines["ANTHROPIC_BASE_URL"]

    assert urls(MAIN, claude) == (MAIN.url, claude.url)
    assert urls(claude, MAIN) == (MAIN.url, claude.url)
    assert urls(claude, ollama) == (ollama.url, claude.url)
    assert urls(ollama, claude) == (ollama.url, claude.url)
    assert urls(claude) == (claude.url, claude.url)
    assert urls(MAIN) == (MAIN.url, MAIN.url)


def test_pasted_environment_lines_make_the_openai_sdk_work_at_once(tmp_path: Path) -> None:
    """Paste the copied lines into a shell and run the OpenAI SDK: its request reaches the
    target through TrayProxy at the right path, with the key TrayProxy adds, not the placeholder."""
    seen = Seen()
    with BackgroundServer(echo_app(seen)) as upstream:
        config = tmp_path / "config.toml"
        port = free_port()
        config.write_text(
            f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n[targets.local]\nurl = "{upstream.url}"\n'
            'key = { env = "TP_MENU_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
        )
        proxy = subprocess.Popen(
            [sys.executable, "-m", "desktop", "serve", "--config", str(config), "-q"],
            env={**os.environ, "TP_MENU_KEY": "sk-real-key-0123456789"},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            main = Endpoint(f"http://127.0.0.1:{port}", frozenset({"authorization"}), adds_key=True)
            lines = environment_lines([main], shell="posix")
            script = (
                lines
                + f'{sys.executable} -c "import openai; c = openai.OpenAI(max_retries=5); print(c.models.list())"\n'
            )
            result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        finally:
            proxy.terminate()
            proxy.communicate(timeout=15)
    assert result.returncode == 0, result.stderr[-2000:]
    request = seen.requests[-1]
    assert request["raw_path"] == "/v1/models"
    assert ["Authorization", "Bearer sk-real-key-0123456789"] in request["headers"]
