"""The tray menu model on pystray's dummy backend: what a person sees in each state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pystray
from background import BackgroundServer, free_port
from upstreams import Seen, echo_app

from desktop.clients import PLACEHOLDER_KEY, Endpoint, RoutedTarget, environment_lines, one_port_lines
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
    assert not named["Open inspector"].enabled  # the page is served by the running proxy
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
CLAUDE = Endpoint("http://127.0.0.1:8001", frozenset({"x-api-key"}), adds_key=True)


def test_environment_lines_for_each_shell() -> None:
    both = [MAIN, CLAUDE]
    posix = environment_lines(both, shell="posix")
    assert "export OPENAI_BASE_URL=http://127.0.0.1:8000/v1\n" in posix
    assert "export OPENAI_API_BASE=http://127.0.0.1:8000/v1\n" in posix
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:8001\n" in posix
    assert f"export OPENAI_API_KEY={PLACEHOLDER_KEY}\n" in posix
    ps = environment_lines([Endpoint("http://127.0.0.1:8000")], shell="powershell")
    assert '$env:OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"\n' in ps
    assert '$env:ANTHROPIC_BASE_URL = "http://127.0.0.1:8000"\n' in ps
    assert "API_KEY" not in ps
    assert not ps.startswith("#")  # nothing to say when no key line replaces a key
    fish = environment_lines(both, shell="fish").splitlines()
    assert fish[0].startswith("# OPENAI_API_KEY, ANTHROPIC_API_KEY hold a placeholder, for your tools")
    assert fish[1] == "set -gx OPENAI_BASE_URL http://127.0.0.1:8000/v1"
    cmd = environment_lines(both, shell="cmd").splitlines()
    assert cmd[0].startswith("REM OPENAI_API_KEY, ANTHROPIC_API_KEY hold a placeholder")
    assert cmd[-1] == f"set ANTHROPIC_API_KEY={PLACEHOLDER_KEY}"


def test_each_sdk_gets_the_port_of_the_target_made_for_it() -> None:
    """OpenAI-style SDKs (Authorization) and Anthropic's (x-api-key) each get the first address
    whose target takes its key in their header; else one whose target takes none; else the main."""
    claude = CLAUDE
    ollama = Endpoint("http://127.0.0.1:8002")
    azure = Endpoint("http://127.0.0.1:8003", frozenset({"api-key"}), adds_key=True)

    def urls(*endpoints: Endpoint) -> tuple[str | None, str | None]:
        lines = variables(environment_lines(endpoints, shell="posix"))
        openai = lines.get("OPENAI_BASE_URL")
        return None if openai is None else openai.removesuffix("/v1"), lines.get("ANTHROPIC_BASE_URL")

    assert urls(MAIN, claude) == (MAIN.url, claude.url)
    assert urls(claude, MAIN) == (MAIN.url, claude.url)
    assert urls(claude, ollama) == (ollama.url, claude.url)
    assert urls(ollama, claude) == (ollama.url, claude.url)
    assert urls(ollama) == (ollama.url, ollama.url)
    # Only a target made for the other API: that SDK gets no lines (see the next test).
    assert urls(claude) == (None, claude.url)
    assert urls(MAIN) == (MAIN.url, None)
    # Azure (api-key) speaks the OpenAI API; never Anthropic's.
    assert urls(azure) == (azure.url, None)
    assert urls(azure, claude) == (azure.url, claude.url)


def variables(lines: str) -> dict[str, str]:
    """The POSIX lines' variables; the comment lines (for the person) left out."""
    return dict(
        line.removeprefix("export ").split("=", 1) for line in lines.splitlines() if not line.startswith("#")
    )


def test_an_sdk_no_port_serves_gets_a_comment_on_how_to_serve_it_instead_of_the_main_port() -> None:
    """With the first-run config (the main port serves openai, which adds Authorization; the
    anthropic target has no port), the Anthropic SDK is not pointed at the main port, where it
    reached OpenAI: no ANTHROPIC_* line, and a comment saying which port to give anthropic or
    that it can be the main target. The same the other way round; the suggested port is free."""
    openai = Endpoint("http://127.0.0.1:8000", frozenset({"authorization"}), adds_key=True, target="openai")
    portless = {"anthropic": frozenset({"x-api-key"}), "ollama": frozenset()}
    lines = environment_lines([openai], shell="posix", portless=portless)
    assert [line for line in lines.splitlines() if "ANTHROPIC" in line and not line.startswith("#")] == []
    assert (
        "# no ANTHROPIC_BASE_URL line: the main port serves 'openai', which adds Authorization, not"
        " x-api-key; give 'anthropic' a prefix (prefix = \"/anthropic\" under [targets.anthropic]),"
        ' a port of its own (port = 8001) or make it the main target (active = "anthropic")\n'
    ) in lines
    gateway = Endpoint("http://127.0.0.1:8001", frozenset({"authorization"}), target="gateway")
    cmd = environment_lines([openai, gateway], shell="cmd", portless=portless)
    assert "\nREM no ANTHROPIC_BASE_URL line" in cmd
    assert "a port of its own (port = 8002)" in cmd
    # A port whose target adds no key (Ollama) is still where the Anthropic SDK goes.
    ollama = Endpoint("http://127.0.0.1:8001", target="ollama")
    assert variables(environment_lines([openai, ollama], shell="posix"))["ANTHROPIC_BASE_URL"] == ollama.url

    claude = Endpoint("http://127.0.0.1:8000", frozenset({"x-api-key"}), adds_key=True, target="claude")
    lines = environment_lines([claude], shell="posix", portless={})
    assert list(variables(lines)) == ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]
    assert (
        "# no OPENAI_BASE_URL line: the main port serves 'claude', which adds x-api-key, not Authorization;"
        " add a target for the OpenAI API whose headers set Authorization, with port = 8001\n"
    ) in lines
    # Asked for one port by name (the tray's submenu), every SDK is pointed there.
    assert list(variables(one_port_lines(claude, shell="posix"))) == [
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
    ]


OPENAI_MAIN = Endpoint("http://127.0.0.1:8000", frozenset({"authorization"}), adds_key=True, target="openai")
X_API_KEY = frozenset({"x-api-key"})


def comments(lines: str) -> list[str]:
    return [line for line in lines.splitlines() if line.startswith("#")]


def test_a_prefix_route_is_the_address_of_the_sdk_its_target_is_made_for() -> None:
    """An Anthropic-style target claiming /anthropic on the main port gives the Anthropic SDK
    http://127.0.0.1:8000/anthropic (it adds /v1 itself), where before it got no lines; an
    OpenAI-style one claiming /openai gives the OpenAI SDKs .../openai/v1. A prefix on the main
    port comes before the target's own port: one port for every tool."""
    anthropic = RoutedTarget("anthropic", ("/anthropic", "/claude"), (), X_API_KEY, adds_key=True)
    lines = environment_lines([OPENAI_MAIN], shell="posix", routes=[anthropic], portless={})
    assert variables(lines) == {
        "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "OPENAI_API_BASE": "http://127.0.0.1:8000/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000/anthropic",
        "OPENAI_API_KEY": PLACEHOLDER_KEY,
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }
    assert not [line for line in comments(lines) if "no ANTHROPIC_BASE_URL" in line or "models" in line]

    claude = Endpoint("http://127.0.0.1:8000", X_API_KEY, adds_key=True, target="claude")
    openai = RoutedTarget("openai", ("/openai",), (), frozenset({"authorization"}))
    lines = environment_lines([claude], shell="fish", routes=[openai])
    assert "set -gx OPENAI_BASE_URL http://127.0.0.1:8000/openai/v1\n" in lines
    assert "set -gx ANTHROPIC_BASE_URL http://127.0.0.1:8000\n" in lines
    assert "OPENAI_API_KEY" not in lines  # that target adds no key: the tool's own passes

    own_port = Endpoint("http://127.0.0.1:8001", X_API_KEY, adds_key=True, target="anthropic")
    both = environment_lines([OPENAI_MAIN, own_port], shell="posix", routes=[anthropic])
    assert variables(both)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000/anthropic"
    # Without routes, the own port as before.
    assert (
        variables(environment_lines([OPENAI_MAIN, own_port], shell="posix"))["ANTHROPIC_BASE_URL"]
        == own_port.url
    )


def test_model_routes_let_both_sdks_use_the_main_port_and_a_comment_says_which_models_go_where() -> None:
    """claude-* routed by model to an x-api-key target while the chosen one is OpenAI-style:
    the main port serves both SDKs, so the Anthropic SDK gets it too (no 'no ANTHROPIC_BASE_URL
    line' comment any more), with a comment saying which models go where."""
    anthropic = RoutedTarget("anthropic", (), ("claude-*",), X_API_KEY, adds_key=True)
    gateway = RoutedTarget("gateway", (), ("gpt-oss-*", "llama-*"), frozenset({"authorization"}))
    lines = environment_lines([OPENAI_MAIN], shell="posix", routes=[anthropic, gateway], portless={})
    assert variables(lines)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert variables(lines)["ANTHROPIC_API_KEY"] == PLACEHOLDER_KEY
    assert variables(lines)["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"
    assert comments(lines)[1:] == [
        "# both SDKs may use the main port: requests for models claude-* go to 'anthropic';"
        " gpt-oss-*, llama-* go to 'gateway'; all others, and bodies over 1 MiB, to 'openai'"
    ]
    cmd = environment_lines([OPENAI_MAIN], shell="cmd", routes=[anthropic])
    assert (
        "REM both SDKs may use the main port: requests for models claude-* go to 'anthropic'; all others, and bodies over 1 MiB, to 'openai'\n"
        in cmd
    )

    # The Anthropic SDK on a prefix or a port of its own: the comment is for the OpenAI SDKs.
    own_port = Endpoint("http://127.0.0.1:8001", X_API_KEY, adds_key=True, target="claude")
    lines = environment_lines([OPENAI_MAIN, own_port], shell="posix", routes=[anthropic])
    assert variables(lines)["ANTHROPIC_BASE_URL"] == own_port.url
    assert comments(lines)[1:] == [
        "# on the main port: requests for models claude-* go to 'anthropic'; all others, and bodies over 1 MiB, to 'openai'"
    ]


def test_a_model_route_serves_only_the_sdk_whose_key_header_its_target_takes() -> None:
    """A Gemini-style target (x-goog-api-key) claiming gemini-* does not make the main port an
    address for the Anthropic SDK: it still gets the note on how to serve it. The chosen
    target's own model claims change nothing (every request reaches it anyway)."""
    gemini = RoutedTarget("gemini", (), ("gemini-*",), frozenset({"x-goog-api-key"}), adds_key=True)
    portless = {"anthropic": X_API_KEY}
    lines = environment_lines([OPENAI_MAIN], shell="posix", routes=[gemini], portless=portless)
    assert "ANTHROPIC_BASE_URL" not in variables(lines)
    assert any(line.startswith("# no ANTHROPIC_BASE_URL line") for line in comments(lines))
    assert (
        "# on the main port: requests for models gemini-* go to 'gemini'; all others, and bodies over 1 MiB, to 'openai'"
        in comments(lines)
    )
    chosen = RoutedTarget("openai", ("/openai",), ("gpt-*",), frozenset({"authorization"}), adds_key=True)
    assert environment_lines([OPENAI_MAIN], shell="posix", routes=[chosen]) == environment_lines(
        [OPENAI_MAIN], shell="posix"
    )


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
