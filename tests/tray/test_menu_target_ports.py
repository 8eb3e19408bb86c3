"""The tray menu lists the targets served on ports of their own (pystray's dummy backend)."""

from __future__ import annotations

from dataclasses import replace

import pystray

from desktop.controller import ProxyStatus, TargetPort
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
