"""Windows: the HKCU ``Run`` value for start at login, ``os.startfile``, the clipboard.

Imports on every OS: ``winreg`` and ``ctypes`` are imported inside the functions using them
(as platformdirs' ``windows.py`` does). The command-line building and parsing, and the reading
of Task Manager's on/off flag, are plain functions tested on any OS.

Start at login is the value ``TrayProxy`` under ``HKCU\\Software\\Microsoft\\Windows\\
CurrentVersion\\Run``. Task Manager's Startup tab switches it off without deleting it, by a
value of the same name under ``...\\Explorer\\StartupApproved\\Run``; we read that back as off,
and turning autostart on from the tray deletes it, or the OS would keep skipping us.

Clipboard: the Win32 clipboard API through ctypes, with ``clip.exe`` as the fallback. The API
puts exact Unicode text there and starts no process; ``clip.exe`` needs UTF-16 input with a
byte-order mark to keep non-ASCII text, and a console program started from a windowed app
flashes a console window unless told not to (CREATE_NO_WINDOW).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "APPROVED_KEY",
    "RUN_KEY",
    "RUN_VALUE",
    "autostart_location",
    "copy_text",
    "disable_autostart",
    "enable_autostart",
    "format_command_line",
    "is_approved",
    "is_same_command",
    "open_path",
    "read_autostart",
    "split_command_line",
]

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
RUN_VALUE = "TrayProxy"
# Win32 constants (WinUser.h, WinBase.h).
CF_UNICODETEXT = 13
GMEM_MOVEABLE = 0x0002
HWND_MESSAGE = -3
CREATE_NO_WINDOW = 0x08000000
# Another program may hold the clipboard open for a moment (clipboard managers do, after each
# change); retry opening it this many times, this far apart, before giving up (~0.5 s).
CLIPBOARD_OPEN_ATTEMPTS = 10
CLIPBOARD_RETRY_S = 0.05
# Bound on clip.exe, which only reads its input and exits.
CLIP_EXE_TIMEOUT_S = 5.0


# --- command lines ---------------------------------------------------------------------------


def format_command_line(argv: Sequence[str]) -> str:
    """``argv`` as one command line, quoted as the Microsoft C runtime parses it."""
    if not argv:
        raise ValueError("a command line needs a program")
    return subprocess.list2cmdline(list(argv))


def split_command_line(line: str) -> list[str]:
    """A command line back to argv, with CommandLineToArgvW's rules: the program name runs to
    the closing quote (or the first blank) with no escapes; after it, 2n backslashes before a
    quote are n backslashes and a quote toggles quoting, 2n+1 are n and a literal quote."""
    line = line.lstrip(" \t")
    if not line:
        return []
    if line.startswith('"'):
        end = line.find('"', 1)
        end = len(line) if end < 0 else end
        program, rest = line[1:end], line[end + 1 :]
    else:
        cut = next((i for i, c in enumerate(line) if c in " \t"), len(line))
        program, rest = line[:cut], line[cut:]
    argv = [program]
    current: list[str] = []
    in_arg = quoted = False
    i = 0
    while i < len(rest):
        c = rest[i]
        if c in " \t" and not quoted:
            if in_arg:
                argv.append("".join(current))
                current, in_arg = [], False
            i += 1
        elif c == "\\":
            run = len(rest[i:]) - len(rest[i:].lstrip("\\"))
            i += run
            in_arg = True
            if rest[i : i + 1] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * run)
        elif c == '"':
            in_arg = True
            if quoted and rest[i + 1 : i + 2] == '"':
                current.append('"')  # "" inside quotes: a literal quote (msvcrt since 2008)
                i += 2
            else:
                quoted = not quoted
                i += 1
        else:
            in_arg = True
            current.append(c)
            i += 1
    if in_arg:
        argv.append("".join(current))
    return argv


def is_same_command(found: Sequence[str], wanted: Sequence[str]) -> bool:
    """Equal argv, the program path compared without case (Windows paths ignore it)."""
    if len(found) != len(wanted) or not found:
        return False
    return found[0].casefold() == wanted[0].casefold() and list(found[1:]) == list(wanted[1:])


def is_approved(flag: bytes | None) -> bool:
    """Task Manager's StartupApproved flag: no value means on; otherwise the first byte is
    even when on (02, 06 seen) and odd when switched off (03, 07). Observed, not documented."""
    return flag is None or not flag or flag[0] % 2 == 0


# --- registry --------------------------------------------------------------------------------


def autostart_location(*, home: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Where the entry lives, for messages."""
    return f"HKCU\\{RUN_KEY}\\{RUN_VALUE}"


def _query(key_path: str) -> tuple[Any, int] | None:
    if sys.platform != "win32":
        raise OSError("the Windows registry exists only on Windows")
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key_path) as key:
            return winreg.QueryValueEx(key, RUN_VALUE)
    except FileNotFoundError:
        return None


def read_autostart(*, home: Path | None = None, environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The command the Run value starts, or None: no value, or switched off in Task Manager."""
    if sys.platform != "win32":
        raise OSError("the Windows registry exists only on Windows")
    import winreg

    found = _query(RUN_KEY)
    if found is None:
        return None
    value, kind = found
    if kind == winreg.REG_EXPAND_SZ:
        value = winreg.ExpandEnvironmentStrings(value)
    elif kind != winreg.REG_SZ:
        return ["<not a text value>"]
    approved = _query(APPROVED_KEY)
    if approved is not None and not is_approved(approved[0] if isinstance(approved[0], bytes) else None):
        return None
    return split_command_line(value) or None


def enable_autostart(
    command: Sequence[str],
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    working_dir: Path | None = None,
) -> None:
    """Set the Run value (one registry write, atomic) and clear Task Manager's "off" flag.

    ``working_dir`` cannot be expressed in a Run value; from source the package must be
    installed (``pip install -e .``) for ``python -m desktop`` to start at login.
    """
    if sys.platform != "win32":
        raise OSError("the Windows registry exists only on Windows")
    import winreg

    with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, format_command_line(command))
    _delete_value(APPROVED_KEY)


def disable_autostart(*, home: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Delete the Run value and the StartupApproved flag (nothing to do when absent)."""
    _delete_value(RUN_KEY)
    _delete_value(APPROVED_KEY)


def _delete_value(key_path: str) -> None:
    if sys.platform != "win32":
        raise OSError("the Windows registry exists only on Windows")
    import winreg

    with (
        contextlib.suppress(FileNotFoundError),
        winreg.OpenKey(winreg.HKEY_CURRENT_USER, key_path, 0, winreg.KEY_SET_VALUE) as key,
    ):
        winreg.DeleteValue(key, RUN_VALUE)


# --- open and copy ---------------------------------------------------------------------------


def open_path(path: Path, *, environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Open ``path`` with its associated application (Explorer for a folder)."""
    if not path.exists():
        return False, f"{path} does not exist"
    startfile = getattr(os, "startfile", None)
    if startfile is None:
        return False, "os.startfile exists only on Windows"
    try:
        startfile(str(path))
    except OSError as exc:
        return False, f"Windows could not open {path}: {exc.strerror or exc.__class__.__name__}"
    return True, "opened with its associated application"


def copy_text(text: str, *, environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Copy ``text`` with the clipboard API, else with clip.exe."""
    try:
        _copy_with_api(text)
    except (OSError, AttributeError) as exc:
        winerror = getattr(exc, "winerror", None)
        api_failure = exc.__class__.__name__ + (f" {winerror}" if winerror else "")
    else:
        return True, "copied"
    try:
        result = subprocess.run(
            ["clip.exe"],
            input=b"\xff\xfe" + text.encode("utf-16-le"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            creationflags=CREATE_NO_WINDOW,
            timeout=CLIP_EXE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"clipboard API failed ({api_failure}); clip.exe failed ({exc.__class__.__name__})"
    if result.returncode != 0:
        return False, f"clipboard API failed ({api_failure}); clip.exe exited {result.returncode}"
    return True, "copied with clip.exe"


def _copy_with_api(text: str) -> None:
    """OpenClipboard needs a window of ours: with NULL, EmptyClipboard makes the owner NULL and
    SetClipboardData then fails (OpenClipboard docs). A message-only STATIC window is enough."""
    if sys.platform != "win32":
        raise OSError("the clipboard API exists only on Windows")
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    # Handles are pointers: without restype ctypes would cut them to 32-bit ints on x64.
    user32.CreateWindowExW.argtypes = [
        wintypes.DWORD, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        wintypes.HWND, wintypes.HMENU, wintypes.HINSTANCE, wintypes.LPVOID,
    ]  # fmt: skip
    user32.CreateWindowExW.restype = wintypes.HWND
    user32.DestroyWindow.argtypes = [wintypes.HWND]
    user32.OpenClipboard.argtypes = [wintypes.HWND]
    user32.OpenClipboard.restype = wintypes.BOOL
    user32.EmptyClipboard.restype = wintypes.BOOL
    user32.SetClipboardData.argtypes = [wintypes.UINT, wintypes.HANDLE]
    user32.SetClipboardData.restype = wintypes.HANDLE
    user32.CloseClipboard.restype = wintypes.BOOL
    kernel32.GlobalAlloc.argtypes = [wintypes.UINT, ctypes.c_size_t]
    kernel32.GlobalAlloc.restype = wintypes.HGLOBAL
    kernel32.GlobalLock.argtypes = [wintypes.HGLOBAL]
    kernel32.GlobalLock.restype = ctypes.c_void_p
    kernel32.GlobalUnlock.argtypes = [wintypes.HGLOBAL]
    kernel32.GlobalFree.argtypes = [wintypes.HGLOBAL]

    def fail(what: str) -> OSError:
        code = ctypes.get_last_error()
        return OSError(0, f"{what} failed", None, code)

    data = text.encode("utf-16-le") + b"\x00\x00"
    window = user32.CreateWindowExW(0, "STATIC", None, 0, 0, 0, 0, 0, HWND_MESSAGE, None, None, None)
    if not window:
        raise fail("CreateWindowExW")
    try:
        for _attempt in range(CLIPBOARD_OPEN_ATTEMPTS):
            if user32.OpenClipboard(window):
                break
            time.sleep(CLIPBOARD_RETRY_S)
        else:
            raise fail("OpenClipboard")
        try:
            if not user32.EmptyClipboard():
                raise fail("EmptyClipboard")
            memory = kernel32.GlobalAlloc(GMEM_MOVEABLE, len(data))
            if not memory:
                raise fail("GlobalAlloc")
            pointer = kernel32.GlobalLock(memory)
            if not pointer:
                kernel32.GlobalFree(memory)
                raise fail("GlobalLock")
            ctypes.memmove(pointer, data, len(data))
            kernel32.GlobalUnlock(memory)  # 0 here means "no longer locked", not an error
            if not user32.SetClipboardData(CF_UNICODETEXT, memory):
                kernel32.GlobalFree(memory)
                raise fail("SetClipboardData")
            # From here the system owns ``memory``.
        finally:
            user32.CloseClipboard()
    finally:
        user32.DestroyWindow(window)


# MessageBoxW flags: MB_ICONERROR | MB_SETFOREGROUND | MB_TOPMOST, so the box is not hidden
# behind other windows when no TrayProxy window exists to own it.
MESSAGE_BOX_FLAGS = 0x10 | 0x10000 | 0x40000


def alert(title: str, message: str, *, environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Show a message box (a windowed app has no console to print to); returns once closed."""
    if sys.platform != "win32":
        return False, "message boxes exist only on Windows"
    import ctypes

    ctypes.windll.user32.MessageBoxW(None, message, title, MESSAGE_BOX_FLAGS)
    return True, "shown in a message box"
