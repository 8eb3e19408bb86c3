"""macOS: a LaunchAgent plist for start at login, ``open``, ``pbcopy``.

Only the standard library and :mod:`desktop.bundle`; imports on every OS (no AppKit here), and
the home directory and environment are parameters, so tests run on Linux with a temp dir.

The agent is ``~/Library/LaunchAgents/<LAUNCH_AGENT_LABEL>.plist`` with ``RunAtLoad`` and no
``KeepAlive``: launchd starts the app once at login, and Quit from the tray stays quit. macOS 13+
lists it under Login Items ("Allow in the Background") and tells the person it was added; the
newer SMAppService API needs a signed app bundle, and TrayProxy.app is not signed (README).
"""

from __future__ import annotations

import contextlib
import os
import plistlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from desktop.platforms.programs import feed_program, find_program, spawn_opener, write_atomically

__all__ = [
    "LAUNCH_AGENT_LABEL",
    "autostart_file",
    "autostart_location",
    "copy_text",
    "disable_autostart",
    "enable_autostart",
    "is_same_command",
    "open_path",
    "read_autostart",
]

# Reverse-DNS label launchd knows the agent by; the file is named after it. Keep it equal to
# the bundle identifier the PyInstaller build gives the .app.
LAUNCH_AGENT_LABEL = "io.github.trayproxy.TrayProxy"
# Apps started from Finder or launchd get no LANG, and pbcopy then reads its input in a legacy
# encoding, turning any non-ASCII byte into mojibake; a UTF-8 locale makes it read UTF-8.
PBCOPY_LOCALE = "en_US.UTF-8"


def autostart_file(*, home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``~/Library/LaunchAgents/<label>.plist``."""
    return home / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def autostart_location(*, home: Path, environ: Mapping[str, str] | None = None) -> str:
    """Where the agent lives, for messages."""
    return str(autostart_file(home=home))


def read_autostart(*, home: Path, environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The agent's ProgramArguments, or None: no agent, an unreadable one, or one that is
    ``Disabled`` or not ``RunAtLoad`` (it would not start at login)."""
    try:
        with autostart_file(home=home).open("rb") as handle:
            agent = plistlib.load(handle)
    except (OSError, plistlib.InvalidFileException, ValueError):
        return None
    if not isinstance(agent, dict) or agent.get("Disabled") is True or agent.get("RunAtLoad") is not True:
        return None
    arguments = agent.get("ProgramArguments")
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        program = agent.get("Program")
        return [program] if isinstance(program, str) else ["<no ProgramArguments>"]
    return list(arguments) or None


def enable_autostart(
    command: Sequence[str],
    *,
    home: Path,
    environ: Mapping[str, str] | None = None,
    working_dir: Path | None = None,
) -> None:
    """Write the agent atomically; launchd runs it at the next login."""
    agent: dict[str, object] = {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        # Only in the graphical login session: a tray app has nothing to do in an ssh session.
        "LimitLoadToSessionType": "Aqua",
        # Interactive: launchd gives it the resources of an app the person is using.
        "ProcessType": "Interactive",
    }
    if working_dir is not None:
        agent["WorkingDirectory"] = str(working_dir)
    write_atomically(autostart_file(home=home), plistlib.dumps(agent, fmt=plistlib.FMT_XML))


def disable_autostart(*, home: Path, environ: Mapping[str, str] | None = None) -> None:
    """Remove the agent (nothing to do when it is not there). A running copy is not stopped:
    without KeepAlive launchd does not restart it, and it will not load at the next login."""
    with contextlib.suppress(FileNotFoundError):
        autostart_file(home=home).unlink()


def is_same_command(found: Sequence[str], wanted: Sequence[str]) -> bool:
    """An exact match (APFS is usually case-insensitive, but a case change still means the
    entry was written by something else)."""
    return list(found) == list(wanted)


def open_path(path: Path, *, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Hand ``path`` to ``open``: the default app for a file, Finder for a folder."""
    if not path.exists():
        return False, f"{path} does not exist"
    program = find_program("open", environ) or "/usr/bin/open"
    if not os.path.exists(program):
        return False, "the 'open' command was not found"
    return spawn_opener([program, str(path)], environ, what="open")


def copy_text(text: str, *, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Copy ``text`` with pbcopy, reading UTF-8."""
    program = find_program("pbcopy", environ) or "/usr/bin/pbcopy"
    if not os.path.exists(program):
        return False, "pbcopy was not found"
    env = {**environ, "LANG": PBCOPY_LOCALE, "LC_ALL": PBCOPY_LOCALE}
    ok, how = feed_program([program], text.encode("utf-8"), env, what="pbcopy")
    return (True, "copied with pbcopy") if ok else (False, how)


# AppleScript's own argument passing (on run argv), so no text is ever quoted into a script.
ALERT_SCRIPT = ("on run argv", "display notification (item 2 of argv) with title (item 1 of argv)", "end run")


def alert(title: str, message: str, *, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Show a Notification Center notification with osascript."""
    program = find_program("osascript", environ) or "/usr/bin/osascript"
    if not os.path.exists(program):
        return False, "osascript was not found"
    script = [arg for line in ALERT_SCRIPT for arg in ("-e", line)]
    return feed_program([program, *script, title, message], b"", environ, what="osascript")
