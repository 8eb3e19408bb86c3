"""Which pystray backend loaded, whether a tray can show it, and what to install if not.

The one job: describe the tray situation in a ``TrayReport`` and, when a person would see no
icon or an icon without a menu, say what to do about it in ``TrayReport.problem``.

pystray picks its backend at import time, appindicator -> gtk -> xorg on Linux, unless
``PYSTRAY_BACKEND`` names one (``lib/pystray/__init__.py``: ``backend()``). The xorg fallback
docks an icon with no menu, which for TrayProxy means no way to switch targets. Importing
pystray can also fail outright: with no ``DISPLAY`` the xorg backend raises Xlib's
``DisplayNameError``, and a missing typelib is a ``ValueError``, not an ``ImportError``.

On Linux an icon also needs a host: a StatusNotifierWatcher on the session bus (KDE, GNOME
with the AppIndicator extension, most panels) or an XEmbed system tray. ``describe_tray`` asks
for both through the OS probes in ``platforms.dbus`` and ``platforms.x11tray``, with the
environment passed in, so tests can point them at a private display and bus, or at nothing.

Imports pystray and PyGObject inside functions only; of ``desktop``, those two probes only;
never the engine, aiohttp or asyncio. Messages name packages and commands, never a key.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from desktop.platforms.dbus import has_bus_name, session_bus_address
from desktop.platforms.x11tray import has_xembed_tray

log = logging.getLogger("trayproxy.tray")

__all__ = [
    "PROBE_TIMEOUT_S",
    "STATUS_NOTIFIER_WATCHER",
    "LoadedBackend",
    "Session",
    "TrayReport",
    "backend_name",
    "check_tray",
    "describe_tray",
    "load_backend",
]

# A bus or X server on this machine answers in milliseconds; the bound only stops a wedged
# one from freezing start-up.
PROBE_TIMEOUT_S = 2.0
# The well-known bus name of the StatusNotifierItem host registry (freedesktop.org
# StatusNotifierItem spec; KDE named it first, everyone kept the name).
STATUS_NOTIFIER_WATCHER = "org.kde.StatusNotifierWatcher"

# What to install for pystray's AppIndicator backend, per distribution family.
INSTALL_APPINDICATOR = (
    "Debian/Ubuntu: sudo apt install gir1.2-ayatanaappindicator3-0.1 python3-gi\n"
    "Fedora: sudo dnf install libayatana-appindicator-gtk3 python3-gobject\n"
    "Arch: sudo pacman -S libayatana-appindicator python-gobject\n"
    "In a virtualenv, PyGObject must be in the venv too: pip install PyGObject "
    '(Debian 12 / Ubuntu 22.04: "PyGObject<3.51"; building needs libgirepository1.0-dev, '
    "libcairo2-dev and pkg-config), or create the venv from the system python3 with "
    "--system-site-packages."
)
INSTALL_GNOME_EXTENSION = (
    'GNOME shows tray icons only with the "AppIndicator and KStatusNotifierItem Support" '
    "extension. Debian/Ubuntu: sudo apt install gnome-shell-extension-appindicator; Fedora: "
    "sudo dnf install gnome-shell-extension-appindicator; then log out and in, and turn it on "
    "in the Extensions app (or: gnome-extensions enable appindicatorsupport@rgcjonas.gmail.com)."
)


class Session(enum.StrEnum):
    """The kind of desktop session the process runs in."""

    X11 = "x11"
    WAYLAND = "wayland"  # WAYLAND_DISPLAY without DISPLAY: no XEmbed, only StatusNotifier hosts
    HEADLESS = "headless"  # neither: no tray at all
    NATIVE = "native"  # Windows or macOS: the OS always has a notification area / menu bar


@dataclass(frozen=True)
class LoadedBackend:
    """What ``import pystray`` gave this process."""

    name: str | None  # "appindicator", "gtk", "xorg", "win32", "darwin", "dummy"; None if import failed
    has_menu: bool = False
    has_menu_radio: bool = False
    has_default_action: bool = False
    error: str | None = None  # "ValueError: Namespace AyatanaAppIndicator3 not available"


@dataclass(frozen=True)
class TrayReport:
    """The tray situation; ``problem`` is None when an icon with a menu should appear."""

    backend: LoadedBackend
    session: Session
    bus_address: str | None = None  # session bus probed; None when there is none
    status_notifier_watcher: bool | None = None  # None: not probed (no bus, or not Linux)
    xembed_tray: bool | None = None  # None: not probed (no X display, or not Linux)
    problem: str | None = None
    # True when the problem is a place TrayProxy is made to run without an icon (no desktop
    # session: a server; a desktop with no tray host), not a failure: the README calls serving
    # on without an icon the normal fallback there, so it is logged as a warning, not an error.
    expected: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One log line: ``backend=appindicator menu=yes session=x11 sni=no xembed=yes``."""

        def show(value: bool | None) -> str:
            return "?" if value is None else ("yes" if value else "no")

        return (
            f"backend={self.backend.name or 'none'} menu={show(self.backend.has_menu)} "
            f"session={self.session} sni={show(self.status_notifier_watcher)} "
            f"xembed={show(self.xembed_tray)}"
        )


def backend_name(icon_class: type) -> str:
    """``pystray._appindicator.Icon`` -> ``"appindicator"``; the dummy ``_base.Icon`` -> ``"dummy"``."""
    name = icon_class.__module__.rpartition("._")[2]
    return "dummy" if name == "base" else name


def load_backend() -> LoadedBackend:
    """Import pystray (it picks its backend now, from ``os.environ``); never raises."""
    try:
        import pystray
    except Exception as exc:  # DisplayNameError, ValueError for a missing typelib, ImportError
        return LoadedBackend(name=None, error=f"{type(exc).__name__}: {exc}")
    icon = pystray.Icon
    if backend_name(icon) in ("appindicator", "gtk"):
        _route_gtk_messages_to_the_log()
    return LoadedBackend(
        name=backend_name(icon),
        has_menu=bool(icon.HAS_MENU),
        has_menu_radio=bool(icon.HAS_MENU_RADIO),
        has_default_action=bool(icon.HAS_DEFAULT_ACTION),
    )


def _route_gtk_messages_to_the_log() -> None:
    """GTK under pystray prints harmless assertions at start-up ("Gdk-CRITICAL **:
    gdk_window_thaw_toplevel_updates: assertion ... failed") to the terminal, where a person
    takes them for TrayProxy failing. They go to the debug log instead."""
    try:
        from gi.repository import GLib

        levels = GLib.LogLevelFlags.LEVEL_CRITICAL | GLib.LogLevelFlags.LEVEL_WARNING
        for domain in ("Gdk", "Gtk", "GdkPixbuf"):
            GLib.log_set_handler(domain, levels, _log_gtk_message)
    except Exception:  # an older PyGObject: the messages just stay on stderr
        log.debug("could not route GTK's messages to the log", exc_info=True)


def _log_gtk_message(domain: str, level: object, message: str, *user_data: object) -> None:
    log.debug("%s: %s", domain, message)


def _why_no_appindicator() -> str:
    """Which piece of pystray's AppIndicator backend is missing in this Python."""
    try:
        import gi
    except Exception:
        return f"PyGObject (gi) is not importable from {sys.executable}"
    for namespace, version in (("Gtk", "3.0"), ("AyatanaAppIndicator3", "0.1")):
        try:
            gi.require_version(namespace, version)
        except Exception:
            if namespace == "AyatanaAppIndicator3":
                try:
                    gi.require_version("AppIndicator3", "0.1")  # the older library also works
                    continue
                except Exception:
                    pass
            return f"the {namespace} {version} typelib is missing"
    return "the AppIndicator backend failed to load"


def _session_of(env: Mapping[str, str], platform: str) -> Session:
    if platform in ("win32", "darwin"):
        return Session.NATIVE
    if env.get("DISPLAY"):
        return Session.X11
    if env.get("WAYLAND_DISPLAY"):
        return Session.WAYLAND
    return Session.HEADLESS


def describe_tray(
    backend: LoadedBackend,
    env: Mapping[str, str],
    *,
    platform: str = sys.platform,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> TrayReport:
    """Probe the tray hosts ``env`` points at and judge whether ``backend`` can show a menu."""
    session = _session_of(env, platform)
    if session is Session.HEADLESS:
        return TrayReport(
            backend,
            session,
            problem=(
                "No desktop session: neither DISPLAY nor WAYLAND_DISPLAY is set, so there is no tray "
                "to show an icon in. Start TrayProxy from your desktop session, or run "
                "'trayproxy serve' to use the proxy without a tray."
            ),
            expected=True,
        )
    if backend.name is None:
        hint = INSTALL_APPINDICATOR if session is not Session.NATIVE else "Reinstall TrayProxy."
        return TrayReport(
            backend, session, problem=(f"The tray icon library could not load ({backend.error}).\n{hint}")
        )
    if backend.name == "dummy":
        return TrayReport(
            backend,
            session,
            problem=(
                "PYSTRAY_BACKEND=dummy is set: pystray's test backend shows no icon. Unset PYSTRAY_BACKEND."
            ),
        )
    if session is Session.NATIVE:
        return TrayReport(backend, session)

    bus = session_bus_address(env)
    watcher: bool | None = None
    if bus is not None:
        try:
            watcher = has_bus_name(bus, STATUS_NOTIFIER_WATCHER, env=env, timeout_s=timeout_s)
        except OSError:
            bus = None  # an address nobody answers at is no bus
    xembed: bool | None = None
    if session is Session.X11:
        try:
            xembed = has_xembed_tray(env["DISPLAY"])
        except OSError as exc:
            return TrayReport(
                backend,
                session,
                bus,
                watcher,
                None,
                problem=(
                    f"The X display {env['DISPLAY']} does not answer ({exc}). Start TrayProxy from "
                    "your desktop session, or run 'trayproxy serve' to use the proxy without a tray."
                ),
            )

    def report(problem: str | None, *, expected: bool = False) -> TrayReport:
        return TrayReport(backend, session, bus, watcher, xembed, problem, expected)

    if not backend.has_menu:
        forced = env.get("PYSTRAY_BACKEND")
        if forced:
            return report(
                f"The tray icon will have no menu: PYSTRAY_BACKEND={forced} selects pystray's basic "
                f"'{backend.name}' backend. Unset PYSTRAY_BACKEND."
            )
        return report(
            f"The tray icon will have no menu: pystray fell back to its basic '{backend.name}' "
            f"backend because its AppIndicator backend could not load ({_why_no_appindicator()}). "
            f"Without the menu you cannot switch targets from the tray. To fix it:\n{INSTALL_APPINDICATOR}"
        )
    if backend.name in ("appindicator", "gtk") and bus is None:
        return report(
            "No D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset and there is no "
            "$XDG_RUNTIME_DIR/bus): the tray icon needs one. Start TrayProxy from your desktop "
            "session, or under dbus-run-session."
        )
    # The AppIndicator library registers with a StatusNotifierWatcher and falls back to an
    # XEmbed tray; the gtk backend (GtkStatusIcon) only knows XEmbed.
    shown = bool(xembed) or (backend.name == "appindicator" and bool(watcher))
    if shown:
        return report(None)
    desktops = env.get("XDG_CURRENT_DESKTOP", "").upper().split(":")
    if "GNOME" in desktops:
        return report(f"No tray to show the icon in. {INSTALL_GNOME_EXTENSION}", expected=True)
    return report(
        "No tray to show the icon in: nothing on the session bus is "
        f"{STATUS_NOTIFIER_WATCHER} and no X11 system tray is running. Add a system tray "
        "(status notifier) applet to your panel, or start a standalone tray such as "
        "stalonetray or trayer; the proxy itself keeps working.",
        expected=True,
    )


def check_tray(env: Mapping[str, str] | None = None) -> TrayReport:
    """Load pystray and describe the tray for this process (``os.environ`` by default)."""
    return describe_tray(load_backend(), os.environ if env is None else env)
