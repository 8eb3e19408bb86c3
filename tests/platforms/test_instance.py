"""Single instance: a second launch tells the first and exits; a killed first copy frees it.

Every test runs the real lock and loopback channel in real processes (``instance_app.py``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop.platforms import instance

APP = Path(__file__).with_name("instance_app.py")
LINE_TIMEOUT_S = 20.0


class App:
    """One running ``instance_app.py`` with its stdout read line by line on a thread."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(APP), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def next_line(self) -> str:
        return self.lines.get(timeout=LINE_TIMEOUT_S)

    def close(self) -> int:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
        code = self.process.wait(timeout=LINE_TIMEOUT_S)
        self._reader.join(LINE_TIMEOUT_S)
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        if self.process.stdout:
            self.process.stdout.close()
        return code


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        if app.process.poll() is None:
            app.process.kill()
        app.close()


def launch(apps: list[App], *args: str) -> App:
    app = App(*args)
    apps.append(app)
    return app


def test_second_launch_tells_the_first_and_exits(tmp_path: Path, apps: list[App]) -> None:
    """Starting TrayProxy again does not start a second tray: the new launch exits and the
    running one is told (it will show a notification), each time."""
    first = launch(apps, str(tmp_path))
    assert first.next_line().startswith("instance held=True port=")
    for _ in range(2):
        second = launch(apps, str(tmp_path))
        assert second.next_line() == "told"
        assert second.close() == 3
        assert first.next_line() == "activated"
    assert first.close() == 0
    assert first.next_line() == "released"
    # After a clean quit the channel file is gone and the next launch is the instance.
    assert not (tmp_path / "instance.json").exists()
    third = launch(apps, str(tmp_path))
    assert third.next_line().startswith("instance held=True")


def test_killed_instance_frees_the_lock_for_the_next_launch(tmp_path: Path, apps: list[App]) -> None:
    """After a crash (SIGKILL, no cleanup) the OS drops the lock: the next launch runs
    instead of saying "already running" forever, and ignores the dead copy's port file."""
    first = launch(apps, str(tmp_path))
    assert first.next_line().startswith("instance held=True")
    stale = json.loads((tmp_path / "instance.json").read_text())
    first.process.kill()
    first.process.wait(timeout=LINE_TIMEOUT_S)
    second = launch(apps, str(tmp_path))
    line = second.next_line()
    assert line.startswith("instance held=True")
    fresh = json.loads((tmp_path / "instance.json").read_text())
    assert fresh["token"] != stale["token"]
    assert fresh["pid"] == second.process.pid


def test_helper_outliving_the_instance_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A program the tray started (xclip keeps serving the clipboard after we quit) does
    not inherit the lock, so relaunching after Quit works while it lives on."""
    script = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from desktop.platforms.instance import acquire\n"
        f"lock = acquire(lambda: None, directory=Path({str(tmp_path)!r}))\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)'],\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False)\n"
        "print(child.pid, flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    helper_pid = int(result.stdout)
    try:
        lock = instance.acquire(lambda: None, directory=tmp_path)
        assert lock is not None
        assert lock.held
        lock.release()
    finally:
        os.kill(helper_pid, 9)


def test_a_stale_port_file_with_no_running_copy_is_replaced(tmp_path: Path) -> None:
    """A port file left by a crash points at a port something else may now use: with nobody
    holding the lock we become the instance, send nothing there, and write our own."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen(1)
        stranger.settimeout(0.2)
        port = stranger.getsockname()[1]
        (tmp_path / "instance.json").write_text(json.dumps({"port": port, "token": "old", "pid": 1}))
        lock = instance.acquire(lambda: None, directory=tmp_path)
        assert lock is not None
        try:
            assert lock.held
            with pytest.raises(TimeoutError):
                stranger.accept()
            assert json.loads((tmp_path / "instance.json").read_text())["port"] == lock.port
        finally:
            lock.release()


def test_wrong_token_is_ignored_and_the_channel_keeps_working(tmp_path: Path) -> None:
    """Another local program poking the loopback port cannot trigger the tray, and its
    junk (oversized, wrong token, silent) does not stop real launches from getting through."""
    activated = threading.Event()
    lock = instance.acquire(activated.set, directory=tmp_path)
    assert lock is not None
    assert lock.port is not None
    try:
        for junk in (b"wrong activate\n", b"x" * 10_000, b""):
            with socket.create_connection(("127.0.0.1", lock.port), timeout=5) as peer:
                try:
                    peer.sendall(junk)
                    peer.shutdown(socket.SHUT_WR)
                    reply = peer.recv(16)
                except OSError:  # cut off after the bounded read (reset): also no answer
                    reply = b""
                assert reply == b""
        assert not activated.is_set()
        assert instance.acquire(lambda: None, directory=tmp_path) is None
        assert activated.wait(LINE_TIMEOUT_S)
        token = json.loads((tmp_path / "instance.json").read_text())["token"]
        assert token not in repr(lock)
    finally:
        lock.release()
    assert not lock.held
    lock.release()  # twice is fine


def test_channel_file_is_private(tmp_path: Path) -> None:
    """The token that lets a launch talk to the tray is readable by this user only."""
    lock = instance.acquire(lambda: None, directory=tmp_path / "run")
    assert lock is not None
    try:
        assert (tmp_path / "run" / "instance.json").stat().st_mode & 0o077 == 0
        assert (tmp_path / "run").stat().st_mode & 0o077 == 0
    finally:
        lock.release()


def test_default_directory_is_the_runtime_dir_else_the_cache_dir(tmp_path: Path, apps: list[App]) -> None:
    """The lock sits in $XDG_RUNTIME_DIR/TrayProxy; when that is unusable (a file in the
    way) it falls back to the per-user cache dir, and single instance still works there."""
    first = launch(apps)
    assert f"dir={Path(os.environ['XDG_RUNTIME_DIR']) / 'TrayProxy'} " in first.next_line()
    first.close()
    shutil.rmtree(Path(os.environ["XDG_RUNTIME_DIR"]) / "TrayProxy")
    (Path(os.environ["XDG_RUNTIME_DIR"]) / "TrayProxy").write_text("in the way")
    assert instance.instance_dir() == (Path(os.environ["XDG_CACHE_HOME"]) / "TrayProxy", "cache")
    held = launch(apps)
    assert f"dir={Path(os.environ['XDG_CACHE_HOME']) / 'TrayProxy'} " in held.next_line()
    second = launch(apps)
    assert second.next_line() == "told"
    assert held.next_line() == "activated"


def test_unlockable_directory_runs_anyway_and_says_so(tmp_path: Path) -> None:
    """Fail open: when no lock file can be made the app still starts, and the lock object
    records that it is not held and why, for the log."""
    (tmp_path / "instance.lock").mkdir()
    lock = instance.acquire(lambda: None, directory=tmp_path)
    assert lock is not None
    assert not lock.held
    assert lock.port is None
    assert lock.reason.startswith("cannot create the lock file")
    lock.release()
