"""Single instance: an OS file lock, and a loopback "activate" message to the running copy.

The lock is ``instance.lock`` in ``platformdirs.user_runtime_dir("TrayProxy")``, taken with
``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows). The OS drops it when the process dies,
however it dies, so a crash never leaves the app "already running". It has nothing to do with
the proxy's port: holding the lock while port 8000 is busy means another program has the port,
not another TrayProxy.

The copy holding the lock listens on 127.0.0.1 at an ephemeral port and writes that port with
a random token to ``instance.json`` beside the lock (0600 in a 0700 directory, so other users
cannot read the token). A second launch finds the lock taken, sends ``<token> activate`` and
exits; the first copy calls ``on_activate`` (the tray shows a notification) on the listener
thread, so the callback must hand UI work to the UI thread itself.

Fail open: when no lock can be taken (an unusable directory, a file system without locks) the
app runs anyway and :attr:`InstanceLock.held` is False with the reason. Imports nothing from
``desktop``; no asyncio (a small daemon thread with a blocking socket is enough).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import platformdirs

__all__ = ["APP_NAME", "InstanceLock", "acquire", "instance_dir", "is_running"]

log = logging.getLogger(__name__)

APP_NAME = "TrayProxy"
LOCK_NAME = "instance.lock"
CHANNEL_NAME = "instance.json"
ACTIVATE = b"activate"
REPLY_OK = b"ok\n"
LOOPBACK = "127.0.0.1"
# 128 random bits: not guessable by another local user probing loopback ports.
TOKEN_BYTES = 16
# A message is "<32 hex> activate\n"; anything longer is not ours and is cut off here.
MAX_MESSAGE_BYTES = 128
# Bound on one peer sending its line: a stuck or hostile connection holds the listener no longer.
READ_TIMEOUT_S = 2.0
# A second launch tries this long to reach the first: the first writes its channel file just
# after taking the lock, so a launch racing it may need a few reads.
ACTIVATE_WAIT_S = 3.0
ACTIVATE_RETRY_S = 0.05
# Bound on release() waiting for the listener thread to notice it should stop.
STOP_JOIN_S = 2.0
# Small listen backlog: a few simultaneous launches at most.
LISTEN_BACKLOG = 4


def instance_dir() -> tuple[Path, str]:
    """The directory for the lock, and which one it is.

    ``user_runtime_dir`` (``$XDG_RUNTIME_DIR/TrayProxy``; on macOS under ``~/Library/Caches``;
    on Windows under ``%LOCALAPPDATA%\\Temp``), else ``user_cache_dir`` when the runtime dir
    cannot be made or written (no XDG_RUNTIME_DIR and no usable ``/run/user/<uid>``, or a file in
    the way). The cache dir is per user and private, unlike a shared ``/tmp`` path another user
    could create first; a lock left there by a crash is harmless since the OS has released it.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when it falls back to a temporary runtime dir; we check the
            # result ourselves and say which directory was used.
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
        if _is_usable(runtime):
            return runtime, "runtime"
    except OSError:
        pass
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)), "cache"


def _is_usable(directory: Path) -> bool:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


class InstanceLock:
    """This process is the running TrayProxy (or runs without a lock: ``held`` False).

    ``port`` is the activate listener's port (None without a lock); ``reason`` says why the
    lock is not held. :meth:`release` is idempotent; the OS releases everything on exit anyway.
    """

    __slots__ = ("_fd", "_listener", "_stop", "_thread", "_token", "directory", "held", "port", "reason")

    def __init__(self, directory: Path, *, held: bool, reason: str = "") -> None:
        self.directory = directory
        self.held = held
        self.reason = reason
        self.port: int | None = None
        self._fd: int | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._token = ""
        self._stop = threading.Event()

    def __repr__(self) -> str:  # never the token
        return f"InstanceLock(directory={str(self.directory)!r}, held={self.held}, port={self.port})"

    def release(self) -> None:
        """Stop listening, remove our channel file, drop the lock."""
        self._stop.set()
        if self._listener is not None and self.port is not None:
            # Wake the blocking accept(): closing the socket does not wake it on Linux.
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), READ_TIMEOUT_S),
            ):
                pass
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._token and _read_channel(self.directory).get("token") == self._token:
            with contextlib.suppress(OSError):
                (self.directory / CHANNEL_NAME).unlink()
        if self._fd is not None:
            # The lock file stays: deleting it would let a launch lock a fresh file while
            # another still holds the old one, and both would think they are alone.
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None
        self.held = False


def acquire(on_activate: Callable[[], None], *, directory: Path | None = None) -> InstanceLock | None:
    """Become the running instance, or tell the running one to show itself and return None.

    ``directory`` defaults to :func:`instance_dir`. Never raises: without a lock it returns an
    :class:`InstanceLock` whose ``held`` is False.
    """
    if directory is None:
        directory, kind = instance_dir()
        log.debug("instance lock in the %s directory %s", kind, directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Python opens descriptors non-inheritable: a helper we start that outlives us
        # (xclip serving the clipboard) cannot keep the lock held.
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        return _fail_open(directory, f"cannot create the lock file: {exc.strerror or exc}")
    try:
        locked = _try_lock(fd)
    except OSError as exc:
        os.close(fd)
        return _fail_open(directory, f"the file system refused the lock: {exc.strerror or exc}")
    if not locked:
        os.close(fd)
        told = _tell_running(directory)
        log.info("TrayProxy is already running%s", "" if told else " (it did not answer)")
        return None
    instance = InstanceLock(directory, held=True)
    instance._fd = fd
    try:
        _listen(instance, on_activate)
    except OSError as exc:
        # Still the only instance; a second launch just cannot ask us to show ourselves.
        instance.reason = f"no activate channel: {exc.strerror or exc}"
        log.warning("single instance: %s", instance.reason)
    return instance


def is_running(*, directory: Path | None = None) -> bool:
    """True when another process holds the instance lock (a TrayProxy tray is running). Asks
    the lock only: the running instance is not told anything."""
    directory = instance_dir()[0] if directory is None else directory
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR)
    except OSError:
        return False  # no lock file: none ever ran here, or its folder is gone
    try:
        if _try_lock(fd):
            _unlock(fd)
            return False
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _fail_open(directory: Path, reason: str) -> InstanceLock:
    log.warning("running without the single-instance lock: %s", reason)
    return InstanceLock(directory, held=False, reason=reason)


def _try_lock(fd: int) -> bool:
    """True when we hold the lock now, False when another process does; OSError otherwise."""
    if sys.platform == "win32":
        import msvcrt

        try:
            # One byte at offset 0; Windows allows locking past the end of the file.
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


def _listen(instance: InstanceLock, on_activate: Callable[[], None]) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(LISTEN_BACKLOG)
        token = secrets.token_hex(TOKEN_BYTES)
        port = listener.getsockname()[1]
        channel = json.dumps({"port": port, "token": token, "pid": os.getpid()})
        _write_private(instance.directory / CHANNEL_NAME, channel)
    except BaseException:
        listener.close()
        raise
    instance._listener, instance._token, instance.port = listener, token, port
    expected = f"{token} ".encode() + ACTIVATE
    instance._thread = threading.Thread(
        target=_serve,
        args=(listener, expected, on_activate, instance._stop),
        name="trayproxy-instance",
        daemon=True,
    )
    instance._thread.start()


def _serve(
    listener: socket.socket, expected: bytes, on_activate: Callable[[], None], stop: threading.Event
) -> None:
    """Answer launches until told to stop: one bounded line each, wrong tokens ignored."""
    while not stop.is_set():
        try:
            peer, _ = listener.accept()
        except OSError:
            return
        with peer:
            if stop.is_set():
                return
            line = _read_line(peer)
            if line is None or not hmac.compare_digest(line, expected):
                continue
            with contextlib.suppress(OSError):
                peer.sendall(REPLY_OK)
        try:
            on_activate()
        except Exception:  # a failing callback must not end the channel
            log.exception("the activate callback failed")


def _read_line(peer: socket.socket) -> bytes | None:
    peer.settimeout(READ_TIMEOUT_S)
    data = b""
    try:
        while b"\n" not in data and len(data) <= MAX_MESSAGE_BYTES:
            chunk = peer.recv(MAX_MESSAGE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    line, newline, _ = data.partition(b"\n")
    return line if newline else None


def _tell_running(directory: Path) -> bool:
    """Send the running copy its token and ``activate``; True when it acknowledged."""
    deadline = time.monotonic() + ACTIVATE_WAIT_S
    while True:
        channel = _read_channel(directory)
        port, token = channel.get("port"), channel.get("token")
        if isinstance(port, int) and isinstance(token, str) and _send_activate(port, token):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(ACTIVATE_RETRY_S)


def _send_activate(port: int, token: str) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), READ_TIMEOUT_S) as peer:
            peer.sendall(f"{token} ".encode() + ACTIVATE + b"\n")
            peer.shutdown(socket.SHUT_WR)
            return peer.recv(len(REPLY_OK)) == REPLY_OK
    except OSError:
        return False


def _read_channel(directory: Path) -> dict[str, object]:
    try:
        data = json.loads((directory / CHANNEL_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_private(path: Path, text: str) -> None:
    """Atomic and 0600 from the start (mkstemp's mode), so the token is never readable."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
