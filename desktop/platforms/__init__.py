"""The OS glue the tray calls: start at login, open a file or folder, copy text; and the
application-menu launcher that ``trayproxy desktop-entry`` installs (Linux only).

One dispatch point picks ``windows``, ``macos`` or ``linux`` by ``sys.platform`` (the way
mitmproxy's ``platform/__init__.py`` and platformdirs do) at call time, so each per-OS module
is imported only where it applies, and every one of them imports on every OS. The helpers they
share (atomic writes, spawning a detached helper, feeding a helper's stdin) live in
``programs.py``, which imports none of them, so no per-OS module imports this one.
Imports from ``desktop``: ``bundle`` only (STYLE.md, module map row 2).

Desktop actions (``open_path``, ``copy_text``) are best effort: they never raise and return
``(ok, how)``, a sentence the tray can show as is. Autostart and launcher writes raise ``OSError``.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from desktop import bundle

__all__ = [
    "AutostartState",
    "AutostartStatus",
    "alert",
    "autostart_status",
    "copy_text",
    "disable_autostart",
    "enable_autostart",
    "install_desktop_entry",
    "is_autostart_enabled",
    "open_path",
    "remove_autostart",
    "remove_desktop_entry",
    "supports_desktop_entry",
]



def _implementation(platform: str) -> ModuleType:
    """The per-OS module for ``platform`` (a ``sys.platform`` value); Linux for other POSIX."""
    if platform == "win32":
        from desktop.platforms import windows

        return windows
    if platform == "darwin":
        from desktop.platforms import macos

        return macos
    from desktop.platforms import linux

    return linux


# --- autostart -------------------------------------------------------------------------------


class AutostartState(enum.Enum):
    """What the OS will do at the next login."""

    OFF = "off"
    ON = "on"
    # An entry exists but starts another command than this copy of the app (the app was moved
    # or reinstalled elsewhere, or another checkout wrote it). It is reported as not enabled,
    # since it will not start *this* app; turning autostart on rewrites it.
    STALE = "stale"


@dataclass(frozen=True)
class AutostartStatus:
    """The OS entry as read back: its state, where it lives, and the command it holds."""

    state: AutostartState
    location: str
    found_command: tuple[str, ...] | None = None

    def describe(self) -> str:
        """One sentence for the tray or a log line."""
        if self.state is AutostartState.ON:
            return f"starts at login ({self.location})"
        if self.state is AutostartState.STALE:
            found = " ".join(self.found_command or ())
            return f"the login entry {self.location} starts another copy: {found}"
        return "does not start at login"


def autostart_status(
    command: Sequence[str] | None = None,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> AutostartStatus:
    """Read the login entry back from the OS and compare it with ``command`` (default: how
    this copy is started, :func:`desktop.bundle.launch_command`)."""
    impl = _implementation(platform)
    home, environ = _defaults(home, environ)
    wanted = list(command) if command is not None else bundle.launch_command(platform=platform)
    location = impl.autostart_location(home=home, environ=environ)
    found = impl.read_autostart(home=home, environ=environ)
    if found is None:
        return AutostartStatus(AutostartState.OFF, location)
    state = AutostartState.ON if impl.is_same_command(found, wanted) else AutostartState.STALE
    return AutostartStatus(state, location, tuple(found))


def is_autostart_enabled(
    command: Sequence[str] | None = None,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> bool:
    """True when the next login starts this copy of the app (a stale entry is False)."""
    status = autostart_status(command, home=home, environ=environ, platform=platform)
    return status.state is AutostartState.ON


def enable_autostart(
    command: Sequence[str] | None = None,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> None:
    """Write (or rewrite) the login entry so the next login runs ``command``; raises OSError."""
    impl = _implementation(platform)
    home, environ = _defaults(home, environ)
    wanted = list(command) if command is not None else bundle.launch_command(platform=platform)
    # From source, `python -m desktop` needs the checkout on the path when it is not installed.
    working_dir = None if bundle.is_frozen() else bundle.source_root()
    impl.enable_autostart(wanted, home=home, environ=environ, working_dir=working_dir)


def disable_autostart(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> None:
    """Remove the login entry (nothing to do when there is none); raises OSError."""
    impl = _implementation(platform)
    home, environ = _defaults(home, environ)
    impl.disable_autostart(home=home, environ=environ)


def remove_autostart(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> str | None:
    """Remove the login entry and return where it was, or None when there was none
    (an entry the person switched off counts as there: it is still ours to remove)."""
    impl = _implementation(platform)
    home, environ = _defaults(home, environ)
    location = impl.autostart_location(home=home, environ=environ)
    # On Windows the location is a registry path, never a file: read_autostart answers there.
    was_there = impl.read_autostart(home=home, environ=environ) is not None or Path(location).is_file()
    impl.disable_autostart(home=home, environ=environ)
    return location if was_there else None


def _defaults(home: Path | None, environ: Mapping[str, str] | None) -> tuple[Path, Mapping[str, str]]:
    return (home if home is not None else Path.home(), environ if environ is not None else os.environ)


# --- application launcher --------------------------------------------------------------------


def supports_desktop_entry(platform: str = sys.platform) -> bool:
    """True where ``trayproxy desktop-entry`` applies: XDG desktops (Linux and other POSIX).
    Windows and macOS users start the bundle from its folder or the Start menu / Applications."""
    return platform not in ("win32", "darwin")


def install_desktop_entry(
    command: Sequence[str] | None = None,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
    icon: Path | None = None,
) -> list[Path]:
    """Put TrayProxy in the application menu, starting ``command`` (default: how this copy is
    started) and showing ``icon`` (default: the app icon in assets/); return the files written.
    Raises OSError, NotImplementedError off XDG desktops."""
    if not supports_desktop_entry(platform):
        raise NotImplementedError("the application-menu entry is written on Linux only")
    from desktop.platforms import linux

    home, environ = _defaults(home, environ)
    wanted = list(command) if command is not None else bundle.launch_command(platform=platform)
    # As for autostart: from source, `python -m desktop` needs the checkout as its folder.
    working_dir = None if bundle.is_frozen() else bundle.source_root()
    return linux.install_desktop_entry(wanted, home=home, environ=environ, working_dir=working_dir, icon=icon)


def remove_desktop_entry(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str = sys.platform,
) -> list[Path]:
    """Remove the launcher and its icon; return the files that were there (none off Linux)."""
    if not supports_desktop_entry(platform):
        return []
    from desktop.platforms import linux

    home, environ = _defaults(home, environ)
    return linux.remove_desktop_entry(home=home, environ=environ)


# --- desktop actions -------------------------------------------------------------------------


def open_path(
    path: Path | str, *, environ: Mapping[str, str] | None = None, platform: str = sys.platform
) -> tuple[bool, str]:
    """Show ``path`` (the config file, the log folder) in the person's default application."""
    try:
        result: tuple[bool, str] = _implementation(platform).open_path(
            Path(path), environ=_defaults(None, environ)[1]
        )
        return result
    except Exception as exc:  # a tray action never raises: the contract is (ok, how)
        return False, f"could not open {path}: {exc.__class__.__name__}"


def alert(
    title: str, message: str, *, environ: Mapping[str, str] | None = None, platform: str = sys.platform
) -> tuple[bool, str]:
    """Tell the person something without the tray (it may be what failed): a notification that
    stays (Linux, macOS) or a message box (Windows). Never raises."""
    try:
        result: tuple[bool, str] = _implementation(platform).alert(
            title, message, environ=_defaults(None, environ)[1]
        )
        return result
    except Exception as exc:
        return False, f"could not show the alert: {exc.__class__.__name__}"


def copy_text(
    text: str, *, environ: Mapping[str, str] | None = None, platform: str = sys.platform
) -> tuple[bool, str]:
    """Put ``text`` on the clipboard (the proxy's address for "Copy address")."""
    try:
        result: tuple[bool, str] = _implementation(platform).copy_text(
            text, environ=_defaults(None, environ)[1]
        )
        return result
    except Exception as exc:  # never the text itself in the message: it may be a key
        return False, f"could not copy: {exc.__class__.__name__}"
