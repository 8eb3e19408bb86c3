"""Linux (and other XDG desktops): autostart ``.desktop`` entry, xdg-open, wl-copy/xclip/xsel.

Only the standard library and :mod:`desktop.bundle`; imports on every OS. The home directory and
the environment are parameters, so tests point them at a temporary directory.

Autostart follows the XDG Autostart spec: a ``TrayProxy.desktop`` in
``$XDG_CONFIG_HOME/autostart`` (default ``~/.config/autostart``), whose ``Exec`` is quoted as the
Desktop Entry spec says (section "The Exec key"), then escaped as a string value (section
"Possible value types"). GNOME Tweaks and KDE's autostart page switch an entry off with
``X-GNOME-Autostart-enabled=false`` or ``Hidden=true``; we read both back as off.

The launcher (``trayproxy desktop-entry install``) is a ``trayproxy.desktop`` in
``$XDG_DATA_HOME/applications`` (default ``~/.local/share/applications``), so the app shows in the
desktop's application menu. Its icon is copied into the person's hicolor theme
(``$XDG_DATA_HOME/icons/hicolor/256x256/apps/trayproxy.png``, Icon Theme spec, "Directory
Layout") and named by theme name: the entry keeps its icon when the checkout's ``assets/`` is
cleaned or absent (an installed wheel carries no assets), and themes may override it.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from desktop import bundle
from desktop.platforms.desktopentry import GROUP, escape_string, format_exec, parse_exec, read_entry
from desktop.platforms.programs import feed_program, find_program, spawn_opener, write_atomically

__all__ = [
    "applications_file",
    "autostart_file",
    "autostart_location",
    "clipboard_tools",
    "copy_text",
    "disable_autostart",
    "enable_autostart",
    "install_desktop_entry",
    "installed_icon_file",
    "is_same_command",
    "launcher_text",
    "open_path",
    "read_autostart",
    "remove_desktop_entry",
]

ENTRY_NAME = "TrayProxy.desktop"
# The app icon as assets/make_icons.py draws it; 256 px is the largest size menus and
# launchers commonly show (the icon theme scales it down for smaller slots).
ICON_SIZE_PX = 256
ICON_ASSET = f"icons/trayproxy-{ICON_SIZE_PX}.png"
# The launcher's file name; lower case like the command, so `trayproxy.desktop` is easy to find.
LAUNCHER_NAME = "trayproxy.desktop"
# Theme name of the copied icon, and the theme folder for ICON_ASSET's size (Icon Theme spec:
# <theme>/<size>x<size>/apps/<name>.png; hicolor is the fallback every desktop searches).
ICON_NAME = "trayproxy"
ICON_THEME_DIR = Path("icons") / "hicolor" / "256x256" / "apps"
# Desktop Entry spec, "Recognized desktop entry keys": Categories from the registered list, each
# followed by a semicolon. One main category only (Menu spec, Appendix A): with two
# ("Development;Network;") menus may list the app twice, and desktop-file-validate hints so.
LAUNCHER_CATEGORIES = "Development;"
# The Desktop Entry spec version our entries follow: every key we write exists in 1.4, and
# desktop-file-validate 0.26 (Debian 12) rejects 1.5 as unknown.
ENTRY_VERSION = "1.4"
COMMENT = "One stable local address for LLM APIs, switched from the tray"
# xdg-open's documented exit statuses (xdg-open(1), "EXIT CODES").
XDG_OPEN_EXIT = {
    1: "a syntax error",
    2: "the file does not exist",
    3: "a required tool is missing",
    4: "no application could open it",
}


# --- autostart -------------------------------------------------------------------------------


def autostart_file(*, home: Path, environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/autostart/TrayProxy.desktop``; a relative XDG_CONFIG_HOME is ignored
    (the XDG Base Directory spec says to)."""
    config = environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and Path(config).is_absolute() else home / ".config"
    return base / "autostart" / ENTRY_NAME


def autostart_location(*, home: Path, environ: Mapping[str, str]) -> str:
    """Where the entry lives, for messages."""
    return str(autostart_file(home=home, environ=environ))


def read_autostart(*, home: Path, environ: Mapping[str, str]) -> list[str] | None:
    """The command the entry starts, or None: no entry, an unreadable one, or one the person
    switched off (``Hidden=true``, ``X-GNOME-Autostart-enabled=false``)."""
    path = autostart_file(home=home, environ=environ)
    try:
        keys = read_entry(path)
    except (OSError, UnicodeDecodeError):
        return None
    if keys.get("Hidden", "false") == "true" or keys.get("X-GNOME-Autostart-enabled", "true") == "false":
        return None
    try:
        argv = parse_exec(keys.get("Exec", ""))
    except ValueError:
        return ["<unreadable Exec line>"]  # an entry that exists but is not ours to parse: stale
    return argv or None


def enable_autostart(
    command: Sequence[str],
    *,
    home: Path,
    environ: Mapping[str, str],
    working_dir: Path | None = None,
    icon: Path | None = None,
) -> None:
    """Write the entry atomically so the next login runs ``command``."""
    icon = icon if icon is not None else bundle.asset_path(ICON_ASSET)
    lines = [
        "# Written by TrayProxy: switch it off from the tray menu (Start at login).",
        GROUP,
        "Type=Application",
        f"Version={ENTRY_VERSION}",
        "Name=TrayProxy",
        f"Comment={COMMENT}",
        f"Exec={format_exec(command)}",
        # Sessions skip an entry whose program is gone instead of reporting a failed start.
        f"TryExec={escape_string(command[0])}",
    ]
    if working_dir is not None:
        lines.append(f"Path={escape_string(str(working_dir))}")
    if icon.is_file():
        lines.append(f"Icon={escape_string(str(icon))}")
    lines += ["Terminal=false", "StartupNotify=false", "X-GNOME-Autostart-enabled=true"]
    path = autostart_file(home=home, environ=environ)
    write_atomically(path, ("\n".join(lines) + "\n").encode("utf-8"))


def disable_autostart(*, home: Path, environ: Mapping[str, str]) -> None:
    """Remove the entry (nothing to do when it is not there)."""
    with contextlib.suppress(FileNotFoundError):
        autostart_file(home=home, environ=environ).unlink()


def is_same_command(found: Sequence[str], wanted: Sequence[str]) -> bool:
    """Paths are case-sensitive here: an exact match."""
    return list(found) == list(wanted)


# --- application launcher ----------------------------------------------------------------------


def _data_home(*, home: Path, environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME``, default ``~/.local/share``; a relative value is ignored (XDG Base
    Directory spec)."""
    data = environ.get("XDG_DATA_HOME", "")
    return Path(data) if data and Path(data).is_absolute() else home / ".local" / "share"


def applications_file(*, home: Path, environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/applications/trayproxy.desktop``: where the menu entry is written."""
    return _data_home(home=home, environ=environ) / "applications" / LAUNCHER_NAME


def installed_icon_file(*, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the launcher's icon is copied: the person's own hicolor theme."""
    return _data_home(home=home, environ=environ) / ICON_THEME_DIR / f"{ICON_NAME}.png"


def remove_command(command: Sequence[str], *, working_dir: Path | None) -> str:
    """The shell line that takes the launcher out again for this copy: ``command`` (how the
    entry starts it) with ``desktop-entry remove``, from ``working_dir``. A checkout has no
    ``trayproxy`` on PATH, so that name alone would not work there."""
    line = shlex.join([*command, "desktop-entry", "remove"])
    if working_dir is not None:
        line = f"cd {shlex.quote(str(working_dir))} && {line}"
    # A comment is one line; a path with a line break (legal, never seen) cannot be shown whole.
    return line if "\n" not in line and "\r" not in line else "trayproxy desktop-entry remove"


def launcher_text(command: Sequence[str], *, working_dir: Path | None, icon_name: str | None) -> str:
    """The launcher's file content: starts ``command`` from the application menu."""
    lines = [
        "# Written by TrayProxy (desktop-entry install). Remove it with:",
        f"#   {remove_command(command, working_dir=working_dir)}",
        GROUP,
        "Type=Application",
        f"Version={ENTRY_VERSION}",
        "Name=TrayProxy",
        "GenericName=LLM API proxy",
        f"Comment={COMMENT}",
        f"Exec={format_exec(command)}",
        # Menus hide an entry whose program is gone instead of offering one that cannot start.
        f"TryExec={escape_string(command[0])}",
    ]
    if working_dir is not None:
        lines.append(f"Path={escape_string(str(working_dir))}")
    if icon_name is not None:
        lines.append(f"Icon={escape_string(icon_name)}")
    lines += [
        "Terminal=false",
        f"Categories={LAUNCHER_CATEGORIES}",
        # The app only adds a tray icon and opens no window, so a launch-feedback cursor
        # would spin until its timeout.
        "StartupNotify=false",
    ]
    return "\n".join(lines) + "\n"


def install_desktop_entry(
    command: Sequence[str],
    *,
    home: Path,
    environ: Mapping[str, str],
    working_dir: Path | None = None,
    icon: Path | None = None,
) -> list[Path]:
    """Copy the icon (when the app has one) and write the launcher, each atomically; return
    the files written. Raises OSError."""
    icon = icon if icon is not None else bundle.asset_path(ICON_ASSET)
    written: list[Path] = []
    installed = installed_icon_file(home=home, environ=environ)
    if icon.is_file():
        write_atomically(installed, icon.read_bytes())
        written.append(installed)
    # Without an icon to copy (an installed wheel carries no assets), one copied earlier serves.
    icon_name = ICON_NAME if installed.is_file() else None
    entry = applications_file(home=home, environ=environ)
    text = launcher_text(command, working_dir=working_dir, icon_name=icon_name)
    write_atomically(entry, text.encode("utf-8"))
    written.append(entry)
    return written


def remove_desktop_entry(*, home: Path, environ: Mapping[str, str]) -> list[Path]:
    """Delete the launcher and its copied icon; return the files that were there."""
    removed: list[Path] = []
    for path in (applications_file(home=home, environ=environ), installed_icon_file(home=home, environ=environ)):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


# --- open and copy ---------------------------------------------------------------------------


def open_path(path: Path, *, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Hand ``path`` to xdg-open, which asks the desktop for the default application."""
    if not path.exists():
        return False, f"{path} does not exist"
    program = find_program("xdg-open", environ)
    if program is None:
        return False, "xdg-open was not found: install xdg-utils"
    ok, how = spawn_opener([program, str(path)], environ, what="xdg-open")
    if not ok:
        for code, meaning in XDG_OPEN_EXIT.items():
            if how.startswith(f"xdg-open failed (exit {code})"):
                how = f"xdg-open could not open {path}: {meaning}"
                break
    return ok, how


def clipboard_tools(environ: Mapping[str, str]) -> list[tuple[str, list[str], str]]:
    """``(program, arguments, package to install)`` in the order to try them.

    wl-copy under Wayland; xclip, then xsel on X11 (they also serve Wayland sessions through
    XWayland, when DISPLAY is set there).
    """
    tools: list[tuple[str, list[str], str]] = []
    if environ.get("WAYLAND_DISPLAY"):
        tools.append(("wl-copy", [], "wl-clipboard"))
    if environ.get("DISPLAY"):
        tools.append(("xclip", ["-selection", "clipboard"], "xclip"))
        tools.append(("xsel", ["--clipboard", "--input"], "xsel"))
    return tools


def copy_text(
    text: str,
    *,
    environ: Mapping[str, str],
    tools: Sequence[tuple[str, list[str], str]] | None = None,
) -> tuple[bool, str]:
    """Copy ``text`` with the first clipboard tool that is installed and works."""
    tools = clipboard_tools(environ) if tools is None else tools
    if not tools:
        return False, "no graphical session to hold a clipboard (neither WAYLAND_DISPLAY nor DISPLAY is set)"
    failures: list[str] = []
    for name, args, _package in tools:
        program = find_program(name, environ)
        if program is None:
            continue
        ok, how = feed_program([program, *args], text.encode("utf-8"), environ, what=name)
        if ok:
            return True, f"copied with {name}"
        failures.append(how)
    if failures:
        return False, "; ".join(failures)
    return False, f"no clipboard tool found: install {tools[0][2]}"


# --- alerts --------------------------------------------------------------------------------------

NOTIFICATIONS_CALL = [
    "call",
    "--session",
    "--dest",
    "org.freedesktop.Notifications",
    "--object-path",
    "/org/freedesktop/Notifications",
    "--method",
    "org.freedesktop.Notifications.Notify",
]
# Desktop Notifications spec: expire_timeout 0 means "stays until the person closes it".
STAYS_OPEN = "0"


def _gvariant_string(text: str) -> str:
    """``text`` as a GVariant text-format string literal, so gdbus takes it verbatim."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def alert(title: str, message: str, *, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Show a notification that stays until dismissed, through the session's notification
    server (Desktop Notifications spec) with gdbus (GLib's tools, on every GTK desktop), or
    notify-send where gdbus is missing. The tray is not needed, so this works when it failed."""
    gdbus = find_program("gdbus", environ)
    if gdbus is not None:
        args = [
            *NOTIFICATIONS_CALL,
            _gvariant_string("TrayProxy"),
            "0",
            _gvariant_string("dialog-error"),
            _gvariant_string(title),
            _gvariant_string(message),
            "[]",
            "{}",
            STAYS_OPEN,
        ]
        ok, how = feed_program([gdbus, *args], b"", environ, what="gdbus")
        if ok:
            return True, "shown through the notification server"
    notify_send = find_program("notify-send", environ)
    if notify_send is not None:
        ok, how = feed_program(
            [notify_send, "--urgency=critical", "--app-name=TrayProxy", title, message], b"", environ, what="notify-send"
        )
        if ok:
            return True, "shown with notify-send"
        return False, how
    if gdbus is not None:
        return False, how
    return False, "neither gdbus nor notify-send is installed (libglib2.0-bin, libnotify-bin)"
