"""The tray menu as a pure function of a snapshot: TrayView -> pystray.Menu.

No state lives here and nothing is called but ``act``: each item says what the person asked
for (``act("stop")``, ``act("target", "openai")``) and the tray app's dispatcher does it. Built
again on every change, so a menu never shows a stale state; tested with pystray's dummy
backend. Imports pystray, the controller's snapshot type and the clients' shell names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pystray

from desktop.clients import Shell
from desktop.controller import ProxyStatus
from desktop.controller.status import where

__all__ = ["Act", "TrayView", "about_text", "build_menu", "status_line", "target_port_lines"]

Act = Callable[[str, str | None], None]
# Copy environment ▸ offers each shell under these names, in this order.
SHELL_LABELS: dict[Shell, str] = {
    "posix": "POSIX shell (bash, zsh)",
    "powershell": "PowerShell",
    "fish": "fish",
    "cmd": "Command Prompt (cmd)",
}


@dataclass(frozen=True)
class TrayView:
    """Everything the menu shows."""

    status: ProxyStatus
    version: str
    autostart: bool = False


def status_line(status: ProxyStatus) -> str:
    """``TrayProxy: running on 127.0.0.1:8000 → openai``; the tooltip and the menu's first line."""
    if status.state == "running":
        where = (status.local_url or "").removeprefix("http://")
        text = f"TrayProxy: running on {where} → {status.target_name}"
    elif status.state == "error":
        text = "TrayProxy: not running"
    else:
        text = f"TrayProxy: stopped ({status.target_name})"
    problem = status.problem
    return f"{text} — {problem}" if problem else text


def target_port_lines(status: ProxyStatus) -> list[str]:
    """One line per target served on a port of its own, while running:
    ``anthropic on 127.0.0.1:8001``, or why its port is not open."""
    if status.state != "running":
        return []
    lines = []
    for own in status.target_ports:
        if own.local_url:
            lines.append(f"{own.name} on {own.local_url.removeprefix('http://')}")
        else:
            lines.append(f"{own.name}: port {own.port} not open — {own.error or 'not listening'}")
    return lines


def about_text(status: ProxyStatus, *, version: str, log_dir: str) -> str:
    """What About says: name and version, every address listened on (with the target each
    serves) and where the config file and the logs are; the state is in the status line."""
    if status.state == "running":
        listening = f"Listens on {where(status.addresses)} ({status.target_name})"
        for own in status.target_ports:
            listening += (
                f"; {own.name} on {where(own.addresses)}" if own.addresses else f"; {own.name}: port {own.port} not open"
            )
    else:
        listening = f"Not listening ({'stopped' if status.state == 'stopped' else 'could not start'})"
    lines = [f"TrayProxy {version}", listening]
    if status.config_path:
        lines.append(f"Config: {status.config_path}")
    lines.append(f"Logs: {log_dir}")
    return "\n".join(lines)


def _shorten(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_menu(view: TrayView, act: Act) -> pystray.Menu:
    """The whole menu for ``view``; every action goes through ``act``."""
    status = view.status
    running = status.state == "running"

    def do(action: str, arg: str | None = None) -> Callable[[], None]:
        return lambda: act(action, arg)

    def choose(name: str) -> pystray.MenuItem:
        return pystray.MenuItem(
            name,
            do("target", name),
            checked=lambda item, name=name: status.target_name == name,
            radio=True,
        )

    targets = [choose(name) for name in status.targets] or [
        pystray.MenuItem(status.target_name, None, checked=lambda item: True, radio=True, enabled=False)
    ]
    # Lines pointing each SDK at the port made for it (desktop.clients), then, per target on a
    # port of its own, lines all on that port: a tool pointed at 8001 reaches that target
    # whatever the active one is.
    copy_env_items: list[pystray.MenuItem] = [
        pystray.MenuItem(label, do("copy-env", shell), enabled=running) for shell, label in SHELL_LABELS.items()
    ]
    own_items = [
        pystray.MenuItem(
            f"{own.name} on port {own.port}",
            pystray.Menu(
                *(pystray.MenuItem(label, do("copy-env", f"{shell}:{own.name}")) for shell, label in SHELL_LABELS.items())
            ),
        )
        for own in (status.target_ports if running else ())
        if own.local_url
    ]
    if own_items:
        copy_env_items += [pystray.Menu.SEPARATOR, *own_items]
    copy_env = pystray.Menu(*copy_env_items)
    return pystray.Menu(
        pystray.MenuItem(_shorten(status_line(status)), None, enabled=False),
        *(pystray.MenuItem(_shorten(line), None, enabled=False) for line in target_port_lines(status)),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Stop proxy" if running else "Start proxy", do("toggle"), default=True),
        pystray.MenuItem("Target", pystray.Menu(*targets)),
        pystray.MenuItem("Copy local URL", do("copy-url"), enabled=running),
        pystray.MenuItem("Copy environment", copy_env, enabled=running),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Open config file", do("open-config"), enabled=status.config_path is not None),
        pystray.MenuItem("Reload config", do("reload"), enabled=status.config_path is not None),
        pystray.MenuItem("Open log folder", do("open-logs")),
        pystray.MenuItem("Start at login", do("autostart"), checked=lambda item: view.autostart),
        pystray.MenuItem(f"About TrayProxy {view.version}", do("about")),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Quit", do("quit")),
    )
