"""A private desktop for tray tests: Xvfb, a session bus, a tray panel and a notification daemon.

``start_desktop(work_dir)`` starts, in order, and waits until each really works:

1. ``Xvfb`` on the first free display (``-displayfd`` reports it once it accepts clients;
   ``-noreset`` keeps the server from resetting, and refusing clients, when the last leaves);
   ready when an X connection opens.
2. ``dbus-daemon --session`` on a socket in ``work_dir``; ready when it answers a call.
3. ``trayer``, an XEmbed system-tray panel (top left, 32 px high); ready when it owns the
   ``_NET_SYSTEM_TRAY_S0`` selection and its panel window is mapped. Retried, since a client
   can rarely fail to connect just after Xvfb starts.
4. ``dunst`` owning ``org.freedesktop.Notifications``: pystray's GTK backends call it on start
   and stop, and ``run()`` fails at once if the call fails.

``with_tray=False`` leaves out 3 and 4: a display and bus with no tray host at all.
``stop_desktop`` stops every process by its pid, newest first. Nothing reaches the network:
Xvfb gets ``-nolisten tcp`` and the bus listens on a unix socket only.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from xdrive import XDriver, wait_until

from desktop.platforms.dbus import has_bus_name
from desktop.platforms.x11tray import has_xembed_tray

# Binaries a desktop needs; the Debian package for each is in tests/system-deps.sh.
REQUIRED_TOOLS = {"Xvfb": "xvfb", "dbus-daemon": "dbus-daemon", "trayer": "trayer", "dunst": "dunst"}
INSTALL_HINT = "run tests/system-deps.sh (as root) to install them"
# 800x600 holds the panel and a menu with room to spare; depth 24 for true-colour screenshots.
SCREEN = "800x600x24"
# Xvfb starts in about 0.1 s and trayer in 0.1-0.2 s here; 10 s covers a loaded CI runner.
START_TIMEOUT_S = 10.0
# trayer rarely fails to open a display just created (seen in 3 of 130 runs before -noreset);
# a second and third try have always been enough.
PANEL_ATTEMPTS = 3
# TERM, then this long for a clean exit before KILL.
STOP_GRACE_S = 2.0
NOTIFICATIONS = "org.freedesktop.Notifications"

T = TypeVar("T")


def missing_tools() -> list[str]:
    """Required binaries not on PATH, with their Debian packages."""
    return [f"{tool} ({package})" for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]


@dataclass
class DesktopSession:
    """A running private desktop."""

    display: str  # ":3"
    bus_address: str  # "unix:path=/tmp/.../bus"
    work_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    x: XDriver | None = None  # set once the display answers

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for an app started inside this desktop: ``base`` (``os.environ``)
        pointed at this display and bus, without ``PYSTRAY_BACKEND`` (so pystray picks a real
        backend) or ``WAYLAND_DISPLAY`` (so GTK uses the X display)."""
        env = dict(os.environ if base is None else base)
        for name in ("PYSTRAY_BACKEND", "WAYLAND_DISPLAY"):
            env.pop(name, None)
        env["DISPLAY"] = self.display
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        env["NO_AT_BRIDGE"] = "1"  # no accessibility bus to look for: no warning, no delay
        return env

    def logs(self) -> str:
        """The last lines each helper process wrote, for failure messages."""
        parts = []
        for name in self.processes:
            log = self.work_dir / f"{name}.log"
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            state = (
                "running"
                if self.processes[name].poll() is None
                else f"exited {self.processes[name].returncode}"
            )
            parts.append(f"--- {name} ({state})\n" + "\n".join(tail))
        return "\n".join(parts)


def _spawn(
    session: DesktopSession,
    name: str,
    argv: list[str],
    env: Mapping[str, str],
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    with open(session.work_dir / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            pass_fds=pass_fds,
            start_new_session=True,
        )
    session.processes[name] = process
    return process


def _read_line_from(fd: int, process: subprocess.Popen[bytes], what: str) -> str:
    """The first line written to pipe ``fd`` (the display number or bus address)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError(f"no {what}")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.1))
        if ready:
            chunk = os.read(fd, 256)
            if not chunk:
                raise RuntimeError(f"no {what} (pipe closed)")
            data += chunk
    return data.split(b"\n", 1)[0].decode().strip()


def _wait_for(process: subprocess.Popen[bytes], check: Callable[[], T], what: str) -> T:
    """Poll ``check`` until it returns something truthy; an ``OSError`` counts as "not yet".
    Give up at once if ``process`` dies, and after START_TIMEOUT_S."""

    def attempt() -> T | None:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {what}")
        try:
            return check()
        except OSError:
            return None

    return wait_until(attempt, START_TIMEOUT_S, what)


def start_desktop(work_dir: Path, *, with_tray: bool = True) -> DesktopSession:
    """Start a private desktop in ``work_dir`` (logs and sockets go there); see the module doc."""
    work_dir.mkdir(parents=True, exist_ok=True)
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work_dir),  # the helpers read no config of the developer's
        "XDG_CONFIG_HOME": str(work_dir / "config"),
        "XDG_RUNTIME_DIR": str(work_dir),
        "NO_AT_BRIDGE": "1",
    }
    os.chmod(work_dir, 0o700)  # XDG_RUNTIME_DIR must be private
    session = DesktopSession(display="", bus_address="", work_dir=work_dir)
    try:
        read_fd, write_fd = os.pipe()
        try:
            xvfb = _spawn(
                session,
                "xvfb",
                ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp", "-noreset"],
                base_env,
                pass_fds=(write_fd,),
            )
            os.close(write_fd)
            session.display = ":" + _read_line_from(read_fd, xvfb, "display number from Xvfb")
        finally:
            os.close(read_fd)
        session.x = _wait_for(xvfb, lambda: XDriver.connect(session.display), "an X connection")
        env = {**base_env, "DISPLAY": session.display}

        bus_socket = work_dir / "bus"
        read_fd, write_fd = os.pipe()
        try:
            bus = _spawn(
                session,
                "dbus",
                [
                    "dbus-daemon",
                    "--session",
                    "--nofork",
                    f"--address=unix:path={bus_socket}",
                    f"--print-address={write_fd}",
                ],
                env,
                pass_fds=(write_fd,),
            )
            os.close(write_fd)
            session.bus_address = _read_line_from(read_fd, bus, "address from dbus-daemon")
        finally:
            os.close(read_fd)
        _wait_for(bus, lambda: has_bus_name(session.bus_address, "org.freedesktop.DBus"), "a bus answer")
        env["DBUS_SESSION_BUS_ADDRESS"] = session.bus_address
        if with_tray:
            _start_panel(session, env)
            dunst = _spawn(session, "dunst", ["dunst"], env)
            _wait_for(dunst, lambda: has_bus_name(session.bus_address, NOTIFICATIONS), "dunst on the bus")
    except BaseException as exc:
        detail = session.logs()
        stop_desktop(session)
        if isinstance(exc, Exception):
            raise RuntimeError(f"the test desktop did not start: {exc}\n{detail}") from exc
        raise
    return session


def _start_panel(session: DesktopSession, env: Mapping[str, str]) -> None:
    x = session.x
    assert x is not None
    for attempt in range(1, PANEL_ATTEMPTS + 1):
        name = "trayer" if attempt == 1 else f"trayer-{attempt}"
        panel = _spawn(
            session,
            name,
            [
                "trayer",
                "--edge",
                "top",
                "--align",
                "left",
                "--widthtype",
                "request",
                "--height",
                "32",
                "--SetDockType",
                "true",
                "--SetPartialStrut",
                "true",
            ],
            env,
        )
        try:
            _wait_for(panel, lambda: has_xembed_tray(session.display) and x.panels(), "the trayer panel")
            return
        except (RuntimeError, TimeoutError):
            _stop(panel)
            if attempt == PANEL_ATTEMPTS:
                raise


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_desktop(session: DesktopSession) -> None:
    """Stop every helper by its pid, newest first (dunst and trayer before the bus and X)."""
    if session.x is not None:
        session.x.close()
        session.x = None
    for process in reversed(list(session.processes.values())):
        _stop(process)


@contextmanager
def running_desktop(work_dir: Path, *, with_tray: bool = True) -> Iterator[DesktopSession]:
    session = start_desktop(work_dir, with_tray=with_tray)
    try:
        yield session
    finally:
        stop_desktop(session)
