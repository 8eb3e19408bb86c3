"""The tray application: a pystray icon on the main thread, driving one ProxyController.

The icon, tooltip and menu are rebuilt from the controller's latest snapshot on every change.
The controller's listener runs on the proxy's loop thread, so it only schedules a refresh on the
UI thread (pystray's GTK backends marshal themselves; macOS needs AppKit's main thread). Menu
actions go through one dispatcher that never raises; the slow ones (start, stop, switch,
reload, quit: a stop waits for open streams) run on a short-lived worker thread so the menu
stays responsive. Notifications are for what needs the person (port taken, config invalid,
key missing or rejected, rate limited, target unreachable), at most one per target and cause
every few minutes; the status line and tooltip keep the last problem until it clears. A
failover is told too (tray/failovers.py: once per failed target and cause in ten minutes, one a
minute at most), and the menu is redrawn when a target's cool-down ends, which changes no
status.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pystray

from desktop import __version__, platforms
from desktop.clients import SHELLS, Endpoint, RoutedTarget, Shell, environment_lines, one_port_lines
from desktop.controller import ListenError, ProxyController, ProxyStatus
from desktop.tray.failovers import FailoverNotifier
from desktop.tray.icons import IconState, draw_icon
from desktop.tray.menu import TrayView, about_text, build_menu, status_line

__all__ = ["NOTIFY_REPEAT_S", "TrayApp"]

log = logging.getLogger("trayproxy.tray")

# The same problem (target and cause) is notified again only after this long.
NOTIFY_REPEAT_S = 300.0
# Open streams get this long when the person quits (the menu must not hang for the full grace).
QUIT_GRACE_S = 3.0
# Drawn at this size; every backend scales it to the panel (22-32 px) from a crisp source.
ICON_SIZE_PX = 64
# The menu is redrawn this long after a cool-down's end, so the end has surely passed.
COOLING_REDRAW_SLACK_S = 0.5


def call_on_ui_thread(action: Callable[[], None]) -> None:
    """Run ``action`` where UI objects may be touched: AppKit's main thread on macOS; pystray's
    GTK and win32 backends hand calls to their own loop already."""
    if sys.platform == "darwin":
        from PyObjCTools import AppHelper

        AppHelper.callAfter(action)
    else:
        action()


def _problems(status: ProxyStatus) -> dict[tuple[str, str], str]:
    """Each problem in ``status`` keyed by (target or scope, cause), with its message."""
    found: dict[tuple[str, str], str] = {}
    if status.error:
        found[("listen", "error")] = status.error
    if status.config_error:
        found[("config", status.config_error.splitlines()[0])] = (
            "The config file has an error; the last good one stays in use: " + status.config_error.splitlines()[0]
        )
    if status.key_problem:
        found[(status.target_name, "key")] = status.key_problem
    if status.condition is not None:
        found[(status.target_name, status.condition.kind)] = status.condition.message
    # Targets on ports of their own: a taken port or an unreadable key there needs the person
    # as much as on the main port.
    for own in status.target_ports:
        if own.error:
            found[(own.name, "listen")] = own.error
        if own.key_problem:
            found[(own.name, "key")] = own.key_problem
    return found


class TrayApp:
    """The icon and its menu for one controller."""

    def __init__(self, controller: ProxyController, *, log_dir: Path) -> None:
        self.controller = controller
        self.log_dir = log_dir
        self._autostart = platforms.is_autostart_enabled()
        self._notified_at: dict[tuple[str, str], float] = {}
        self._shown: dict[tuple[str, str], str] = {}
        self._busy = threading.Lock()
        status = controller.status
        self._failovers = FailoverNotifier(seen=status.failover)
        # Redraws the menu when the soonest cool-down ends; replaced on each status.
        self._cooling_timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        self.icon = pystray.Icon(
            "TrayProxy",
            icon=draw_icon(self._icon_state(status), ICON_SIZE_PX),
            title=status_line(status),
            menu=build_menu(self._view(status), self.act),
        )
        controller.add_listener(self._on_status)

    # -- state -> UI ---------------------------------------------------------------------

    def _view(self, status: ProxyStatus) -> TrayView:
        return TrayView(status=status, version=__version__, autostart=self._autostart)

    @staticmethod
    def _icon_state(status: ProxyStatus) -> IconState:
        # Red for whatever needs the person, as the README promises: a taken port (main or a
        # target's own), a config edit that was not applied, an unreadable key, and the
        # target's troubles; the status line says which (ProxyStatus.problem).
        if status.state == "error" or status.problem:
            return IconState.ERROR
        return IconState.RUNNING if status.state == "running" else IconState.STOPPED

    def _on_status(self, status: ProxyStatus) -> None:
        """Controller listener (any thread): refresh the UI there, notify what is new."""
        call_on_ui_thread(self.refresh)
        self._notify_new_problems(status)
        self._redraw_when_cooling_ends(status)
        message = self._failovers.message_for(status)
        if message is not None:
            self.notify(message)

    def refresh(self) -> None:
        """Redraw icon, tooltip and menu from the latest snapshot."""
        status = self.controller.status
        self.icon.icon = draw_icon(self._icon_state(status), ICON_SIZE_PX)
        self.icon.title = status_line(status)[:127]  # Windows cuts tooltips at 128 characters
        self.icon.menu = build_menu(self._view(status), self.act)

    def _redraw_when_cooling_ends(self, status: ProxyStatus) -> None:
        """Redraw once the soonest cool-down in ``status`` has ended (nothing else would: the
        end of a cool-down publishes no status), then look at the next."""
        now = time.time()
        ends = [end for _, end in status.cooling if end > now] if status.state == "running" else []
        with self._timer_lock:
            if self._cooling_timer is not None:
                self._cooling_timer.cancel()
                self._cooling_timer = None
            if not ends:
                return

            def redraw() -> None:
                call_on_ui_thread(self.refresh)
                self._redraw_when_cooling_ends(self.controller.status)

            timer = threading.Timer(min(ends) - now + COOLING_REDRAW_SLACK_S, redraw)
            timer.name = "trayproxy-cooling-redraw"
            timer.daemon = True
            self._cooling_timer = timer
            timer.start()

    def _notify_new_problems(self, status: ProxyStatus) -> None:
        current = _problems(status)
        now = time.monotonic()
        for key, message in current.items():
            if key in self._shown:
                continue
            last = self._notified_at.get(key)
            if last is None or now - last >= NOTIFY_REPEAT_S:
                self._notified_at[key] = now
                self.notify(message)
        self._shown = current

    def notify(self, message: str, title: str = "TrayProxy") -> None:
        """Show a desktop notification; logged, never raised, when the desktop has none."""
        log.info("notification: %s", message)
        try:
            if self.icon.HAS_NOTIFICATION:
                self.icon.notify(message, title)
        except Exception as exc:
            log.warning("could not show a notification: %s", exc)

    # -- actions -------------------------------------------------------------------------

    def act(self, action: str, arg: str | None = None) -> None:
        """What the person chose in the menu; never raises."""
        try:
            self._dispatch(action, arg)
        except Exception:
            log.exception("menu action %s failed", action)

    def _dispatch(self, action: str, arg: str | None) -> None:
        status = self.controller.status
        if action == "toggle":
            self._in_background(self.controller.stop if status.state == "running" else self._start)
        elif action == "target" and arg:
            self._in_background(lambda: self.controller.choose_target(arg))
        elif action == "cache" and arg:
            self._in_background(lambda: self._set_cache_mode(arg))
        elif action == "reload":
            self._in_background(self.controller.reload_config)
        elif action == "copy-url" and status.local_url:
            self._copy(status.local_url, "the local URL")
        elif action == "copy-env" and status.local_url:
            self._copy_environment(status, status.local_url, arg or "posix")
        elif action == "inspect":
            self._in_background(self._open_inspector)
        elif action == "open-config" and status.config_path:
            self._report_desktop_action(platforms.open_path(Path(status.config_path)))
        elif action == "open-logs":
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._report_desktop_action(platforms.open_path(self.log_dir))
        elif action == "autostart":
            if self._autostart:
                platforms.disable_autostart()
            else:
                platforms.enable_autostart()
            self._autostart = platforms.is_autostart_enabled()
            self.refresh()
        elif action == "about":
            self.notify(about_text(status, version=__version__, log_dir=str(self.log_dir)))
        elif action == "quit":
            self._in_background(self.quit)
        else:
            log.debug("ignored menu action %s", action)

    def _set_cache_mode(self, mode: str) -> None:
        """The chosen target's cache mode, saved in the file; why not, in a notification."""
        try:
            self.controller.set_cache_mode(mode)
        except RuntimeError as exc:
            self.notify(f"Cache mode not changed: {exc}")

    def _open_inspector(self) -> None:
        """Open the inspector page in the default browser, through a local file that lets that
        browser in once (no code on a command line)."""
        try:
            page, opener = self.controller.inspector_link()
        except RuntimeError as exc:
            self.notify(f"Cannot open the inspector: {exc}")
            return
        if opener is None:
            self.notify(f"Open the inspector with `trayproxy inspect`; it is at {page}")
            return
        self._report_desktop_action(platforms.open_path(opener))

    def _copy_environment(self, status: ProxyStatus, main_url: str, arg: str) -> None:
        """``arg``: a shell ("posix", "fish", ...) for lines pointing each SDK at the port made
        for it (the main one or a target's own), "SHELL:NAME" for lines all on NAME's own port."""
        shell_name, _, own_name = arg.partition(":")
        shell: Shell = next((shell for shell in SHELLS if shell == shell_name), "posix")
        main = Endpoint(main_url, status.key_headers, self.controller.adds_key, status.target_name)
        own_ports = {
            own.name: Endpoint(own.local_url, own.key_headers, own.adds_key, own.name)
            for own in status.target_ports
            if own.local_url is not None
        }
        if own_name and own_name not in own_ports:
            self.notify(f"{own_name} is not listening on a port of its own now")
            return
        token = status.local_token.reveal() if status.local_token else None
        if own_name:
            lines = one_port_lines(own_ports[own_name], shell=shell, local_token=token)
        else:
            routes = [
                RoutedTarget(claim.name, claim.prefixes, claim.models, claim.key_headers, claim.adds_key)
                for claim in status.routes
            ]
            served = {status.target_name, *own_ports, *(route.target for route in routes)}
            portless = {
                name: headers
                for name, headers in self.controller.key_headers_by_target().items()
                if name not in served
            }
            lines = environment_lines(
                [main, *own_ports.values()], shell=shell, local_token=token, portless=portless, routes=routes
            )
        self._copy(lines, "the environment lines")

    def _start(self) -> None:
        with contextlib.suppress(ListenError):  # in the status: shown and notified by the listener
            self.controller.start()

    def quit(self) -> None:
        """Stop the proxy (open streams get a few seconds) and leave the tray."""
        self.controller.close(QUIT_GRACE_S)
        with self._timer_lock:
            if self._cooling_timer is not None:
                self._cooling_timer.cancel()
        self.icon.stop()

    def _copy(self, text: str, what: str) -> None:
        ok, how = platforms.copy_text(text)
        if ok:
            log.info("copied %s to the clipboard", what)
        else:
            self.notify(f"Could not copy {what}: {how}")

    def _report_desktop_action(self, result: tuple[bool, str]) -> None:
        ok, how = result
        if not ok:
            self.notify(how)

    def _in_background(self, work: Callable[[], object]) -> None:
        """Run a slow action off the UI thread; one at a time, clicks during it are dropped."""
        if not self._busy.acquire(blocking=False):
            log.info("still busy with the previous action")
            return

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("tray action failed")
            finally:
                self._busy.release()

        threading.Thread(target=run, name="trayproxy-action", daemon=True).start()

    # -- running -------------------------------------------------------------------------

    def run(self, backend_summary: str) -> None:
        """Show the icon and run the UI loop on this (the main) thread until Quit."""

        def setup(icon: pystray.Icon) -> None:
            icon.visible = True
            log.info("tray ready (%s)", backend_summary)
            self._notify_new_problems(self.controller.status)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=self.quit, name="trayproxy-quit", daemon=True).start()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        self.icon.run(setup=setup)
