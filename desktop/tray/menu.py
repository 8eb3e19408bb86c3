"""The tray menu as a pure function of a snapshot: TrayView -> pystray.Menu.

No state lives here and nothing is called but ``act``: each item says what the person asked
for (``act("stop")``, ``act("target", "openai")``) and the tray app's dispatcher does it. Built
again on every change, so a menu never shows a stale state; tested with pystray's dummy
backend. Imports pystray, the controller's snapshot type, the clients' shell names and the
tray's words for a cool-down only.

With routes (issue 14) the Target menu says what each target claims on the main port
(``anthropic — /anthropic, claude-*``) and which are tried last for now, and the status line
names the targets in a cool-down; the menu is rebuilt when one ends (tray/app.py).

With recorded answers (issue 16) the Cache menu sets the chosen target's mode (Off, Record,
Replay, Offline; ``act("cache", "replay")``), and the status line says a mode other than off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pystray

from desktop.clients import Shell
from desktop.controller import ProxyStatus
from desktop.controller.status import where
from desktop.tray.failovers import clock_time, cooling_text

__all__ = ["Act", "TrayView", "about_text", "build_menu", "status_line", "target_label", "target_port_lines"]

Act = Callable[[str, str | None], None]
# Cache ▸ offers each mode of the chosen target under these names, in this order.
CACHE_LABELS: dict[str, str] = {
    "off": "Off",
    "record": "Record",
    "replay": "Replay",
    "offline": "Offline",
}
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
    # Wall-clock time the menu is made at: a cool-down that has ended by then is not shown.
    now: float = field(default_factory=time.time)


def _cooling(status: ProxyStatus, now: float) -> dict[str, float]:
    """Target name -> when its cool-down ends, for those still tried last at ``now``, while
    running (a stopped proxy tries nothing)."""
    if status.state != "running":
        return {}
    return {name: end for name, end in status.cooling if end > now}


def status_line(status: ProxyStatus, now: float | None = None) -> str:
    """``TrayProxy: running on 127.0.0.1:8000 → openai`` (with `` (cache: replay)`` when the
    target's answers are recorded), then the problem and the targets in a
    cool-down at wall-clock ``now`` (default: the present); the tooltip and the menu's first line."""
    cache = _cache_note(status)
    if status.state == "running":
        where = (status.local_url or "").removeprefix("http://")
        text = f"TrayProxy: running on {where} → {status.target_name}" + (f" ({cache})" if cache else "")
    elif status.state == "error":
        text = "TrayProxy: not running"
    else:
        text = f"TrayProxy: stopped ({status.target_name}" + (f"; {cache})" if cache else ")")
    cooling = _cooling(status, time.time() if now is None else now)
    notes = [
        *([status.problem] if status.problem else []),
        # Short: the line is cut at 90 characters; the Target menu says why.
        *(f"{name} tried last until {clock_time(end)}" for name, end in cooling.items()),
    ]
    return f"{text} — {'; '.join(notes)}" if notes else text


def _cache_note(status: ProxyStatus) -> str:
    """``cache: replay``, or "" while answers are not recorded: a person wondering why answers
    repeat, or why an unrecorded request got 504, sees it at a glance."""
    return "" if status.cache_mode == "off" else f"cache: {status.cache_mode}"


def target_label(status: ProxyStatus, name: str, now: float) -> str:
    """``anthropic — /anthropic, claude-*``: a target in the Target menu, with what it claims
    on the main port and, while it is tried last, until when (``now``: wall clock)."""
    claims = next((claim.text for claim in status.routes if claim.name == name), "")
    end = _cooling(status, now).get(name)
    notes = [*([claims] if claims else []), *([cooling_text(end)] if end is not None else [])]
    return f"{name} — {'; '.join(notes)}" if notes else name


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
        # Choosing a target moves the default route only: claims and fallbacks stay as written.
        return pystray.MenuItem(
            _shorten(target_label(status, name, view.now)),
            do("target", name),
            checked=lambda item, name=name: status.target_name == name,
            radio=True,
        )

    def cache_mode(mode: str) -> pystray.MenuItem:
        return pystray.MenuItem(
            CACHE_LABELS[mode],
            do("cache", mode),
            checked=lambda item, mode=mode: status.cache_mode == mode,
            radio=True,
        )

    # The modes apply to the chosen target; the first line says which that is.
    cache = pystray.Menu(
        pystray.MenuItem(_shorten(f"Recorded answers of {status.target_name}"), None, enabled=False),
        *(cache_mode(mode) for mode in CACHE_LABELS),
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
        pystray.MenuItem(_shorten(status_line(status, view.now)), None, enabled=False),
        *(pystray.MenuItem(_shorten(line), None, enabled=False) for line in target_port_lines(status)),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Stop proxy" if running else "Start proxy", do("toggle"), default=True),
        pystray.MenuItem("Target", pystray.Menu(*targets)),
        pystray.MenuItem("Cache", cache),
        pystray.MenuItem("Copy local URL", do("copy-url"), enabled=running),
        pystray.MenuItem("Copy environment", copy_env, enabled=running),
        pystray.MenuItem("Open inspector", do("inspect"), enabled=running),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Open config file", do("open-config"), enabled=status.config_path is not None),
        pystray.MenuItem("Reload config", do("reload"), enabled=status.config_path is not None),
        pystray.MenuItem("Open log folder", do("open-logs")),
        pystray.MenuItem("Start at login", do("autostart"), checked=lambda item: view.autostart),
        pystray.MenuItem(f"About TrayProxy {view.version}", do("about")),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem("Quit", do("quit")),
    )
