"""What the per-OS modules share: atomic file writes and the system programs they run (an
opener such as xdg-open or open, left running detached; a clipboard or notification helper fed
on its stdin), each with a bound on waiting and a one-line reason when it fails.

A module of its own, importing only ``bundle`` of ours, so that the dispatcher in ``__init__.py`` picks
a per-OS module and the per-OS modules use these without importing each other in a loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from desktop import bundle
from desktop.atomicfile import write_bytes_atomically

__all__ = ["child_environ", "feed_program", "find_program", "spawn_opener", "write_atomically"]

# How long an opener (xdg-open, open) gets to fail before we call it launched: they hand the
# path to the desktop's launcher and exit within a fraction of a second, and "no application
# for this type" arrives as their exit status in that time. One still running after this is
# showing the file (some xdg-open fallbacks run the viewer in the foreground).
OPENER_CHECK_S = 1.0
# Bound on a clipboard helper reading our text and handing it to its background child
# (xclip, xsel and wl-copy fork one that serves the clipboard); a hang must not freeze the tray.
COPY_TIMEOUT_S = 5.0
# Characters of a helper's stderr quoted in a message: enough for its one-line reason.
STDERR_QUOTE_CHARS = 200


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old file or the new, never half;
    readable by others (``mode``), since the session manager reads these entries."""
    write_bytes_atomically(path, data, mode=mode)


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a system program we start (xdg-open, xclip, open, pbcopy).

    A frozen Linux build runs with ``LD_LIBRARY_PATH`` pointing into the bundle, which makes
    system programs load our bundled libraries and crash; PyInstaller keeps the person's value
    in ``LD_LIBRARY_PATH_ORIG`` (PyInstaller docs, "LD_LIBRARY_PATH / LIBPATH considerations").
    """
    env = dict(environ)
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif bundle.is_frozen():
        env.pop("LD_LIBRARY_PATH", None)
    return env


def find_program(name: str, environ: Mapping[str, str]) -> str | None:
    """``name`` looked up on ``environ``'s PATH, as the child will see it."""
    return shutil.which(name, path=environ.get("PATH", os.defpath))


def _stderr_line(handle: IO[bytes]) -> str:
    handle.seek(0)
    text = handle.read(STDERR_QUOTE_CHARS * 4).decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else ""
    return first[:STDERR_QUOTE_CHARS]


def _reap_later(process: subprocess.Popen[bytes]) -> None:
    """Wait for ``process`` on a daemon thread: no zombie, and no ResourceWarning from a
    Popen dropped while its child runs."""
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()


def _start(
    argv: Sequence[str], stdin: int, errors: IO[bytes], environ: Mapping[str, str]
) -> subprocess.Popen[bytes] | OSError:
    """``argv`` started in its own session, its stdout discarded and stderr to ``errors``; the
    OSError when it cannot be started (no such program, not executable)."""
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=child_environ(environ),
            start_new_session=True,
        )
    except OSError as exc:
        return exc


def spawn_opener(argv: Sequence[str], environ: Mapping[str, str], *, what: str) -> tuple[bool, str]:
    """Start ``argv`` detached (DEVNULL stdin/stdout, own session) and report a quick failure.

    ``what`` names the program in messages. stderr goes to a temporary file, not a pipe: a
    helper's background children may keep a pipe open for as long as they live.
    """
    with tempfile.TemporaryFile() as errors:
        process = _start(argv, subprocess.DEVNULL, errors, environ)
        if isinstance(process, OSError):
            return False, f"could not start {what}: {process.strerror or process}"
        try:
            code = process.wait(timeout=OPENER_CHECK_S)
        except subprocess.TimeoutExpired:
            _reap_later(process)
            return True, f"opened with {what}"
        if code == 0:
            return True, f"opened with {what}"
        reason = _stderr_line(errors)
        return False, f"{what} failed (exit {code})" + (f": {reason}" if reason else "")


def feed_program(
    argv: Sequence[str], data: bytes, environ: Mapping[str, str], *, what: str
) -> tuple[bool, str]:
    """Run ``argv`` with ``data`` on stdin in its own session; ``(True, "")`` when it exits 0.

    stdout is DEVNULL and stderr a temporary file, since clipboard helpers fork a child that
    keeps serving the clipboard with our descriptors; waiting for a pipe's EOF would hang
    until someone copies something else.
    """
    with tempfile.TemporaryFile() as errors:
        process = _start(argv, subprocess.PIPE, errors, environ)
        if isinstance(process, OSError):
            return False, f"could not start {what}: {process.strerror or process}"
        try:
            process.communicate(data, timeout=COPY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False, f"{what} did not finish within {COPY_TIMEOUT_S:g} s"
        if process.returncode == 0:
            return True, ""
        reason = _stderr_line(errors)
        # A helper that echoes its input would put our text in the message; it may be secret.
        secret = data.decode("utf-8", "replace").strip()
        if secret and secret in reason:
            reason = reason.replace(secret, "***")
        return False, f"{what} failed (exit {process.returncode})" + (f": {reason}" if reason else "")
