"""Replacing a file so that a process killed at any moment leaves the old file or the new one.

The data goes to a temporary in the same folder (``.NAME.XXXX.tmp``), fsynced, renamed over the
file, then the folder fsynced (a power cut soon after cannot bring the old file back). The write
goes through symlinks, so a file kept in a dotfiles repo and linked into place stays linked.
Temporaries left by a killed writer are removed by the next write once they are a minute old.
Used by the config file's writes and the per-OS launcher and autostart entries alike; imports
nothing of ours.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "STALE_TEMP_AGE_S",
    "mode_of",
    "real_path",
    "replace_durably",
    "write_bytes_atomically",
    "write_temporary",
]

TEMP_SUFFIX = ".tmp"
# A write takes milliseconds; a temporary this old belongs to a writer that was killed, not to
# one still running in another process (removing a live one would make its rename fail).
STALE_TEMP_AGE_S = 60.0
# Windows refuses to replace a file another process has open without FILE_SHARE_DELETE
# (antivirus scanners, Python's own open(), editors); such opens are short, so retry briefly.
WINDOWS_REPLACE_ATTEMPTS = 20
WINDOWS_REPLACE_DELAY_S = 0.05


def write_bytes_atomically(path: Path, data: bytes, *, mode: int | None = None, new_mode: int = 0o600) -> None:
    """Replace ``path`` (through symlinks) with ``data`` so that a crash leaves the old file or
    the new, never half. ``mode`` defaults to the existing file's permission bits, else
    ``new_mode``."""
    target = real_path(path)
    if mode is None:
        mode = mode_of(target, new_mode)
    temporary = write_temporary(target, data, mode)
    try:
        replace_durably(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def real_path(path: Path) -> Path:
    """The file a write must replace: through symlinks, so a config kept in a dotfiles repo and
    linked into place stays linked (os.replace on the link would swap in a plain file)."""
    return Path(os.path.realpath(path))


def mode_of(path: Path, missing: int) -> int:
    """``path``'s permission bits; ``missing`` when there is no such file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return missing


def write_temporary(target: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary next to ``target``, durably, with ``mode``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if sys.platform != "win32":
                # mkstemp makes 0600; the file gets the bits asked for (a 0644 config stays
                # readable by the person's other tools, a desktop entry by the session).
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return Path(name)


def replace_durably(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` over ``target`` and make the rename itself durable."""
    for attempt in range(WINDOWS_REPLACE_ATTEMPTS):
        try:
            os.replace(temporary, target)
            break
        except PermissionError:
            if sys.platform != "win32" or attempt == WINDOWS_REPLACE_ATTEMPTS - 1:
                raise
            time.sleep(WINDOWS_REPLACE_DELAY_S)
    if os.name == "posix":
        # The rename is a change to the folder: without syncing it, a power cut soon after can
        # bring the old file back even though the new contents reached the disk.
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` (and of its backup) left by a killed writer."""
    prefix = f".{target.name}."
    cutoff = time.time() - STALE_TEMP_AGE_S
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(OSError):
                if entry.lstat().st_mtime < cutoff:
                    entry.unlink()
