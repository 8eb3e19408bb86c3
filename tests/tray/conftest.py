"""Tray test fixtures: pystray's dummy backend in-process, a real private desktop for subprocesses.

In-process tests import pystray with ``PYSTRAY_BACKEND=dummy``, set below before any test
module can import it: no display needed, and the menu model can be inspected. Tests of a real
icon start the app as a subprocess with ``desktop.env()``, which drops that variable, so the
app picks its backend as it would for a user.

``desktop`` (one per test session) is a private X display with a tray panel, session bus and
notification daemon; ``bare_desktop`` (one per module) a display and bus with no tray at all.
When the binaries are missing, these tests skip with the install hint, except under CI
(``CI`` set), where a skipped real-icon test would hide a broken tray: they fail.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYSTRAY_BACKEND", "dummy")
sys.path.insert(0, str(Path(__file__).parent))  # desktop_session, xdrive

from desktop_session import (
    INSTALL_HINT,
    DesktopSession,
    missing_tools,
    running_desktop,
)
from xdrive import XDriver


def require_desktop_tools() -> None:
    """Skip (locally) or fail (under CI) when the desktop binaries are not installed."""
    missing = missing_tools()
    if not missing:
        return
    message = f"tray tests need {', '.join(missing)}: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DesktopSession]:
    """A private desktop with a tray panel, shared by the session's tray tests."""
    require_desktop_tools()
    with running_desktop(tmp_path_factory.mktemp("desktop")) as session:
        yield session


@pytest.fixture(scope="module")
def bare_desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DesktopSession]:
    """An X display and session bus with no tray host and no notification daemon."""
    require_desktop_tools()
    with running_desktop(tmp_path_factory.mktemp("bare-desktop"), with_tray=False) as session:
        yield session


@pytest.fixture
def x(desktop: DesktopSession) -> XDriver:
    """The helpers that look at and click on ``desktop``."""
    assert desktop.x is not None
    return desktop.x


@pytest.fixture
def desktop_env(desktop: DesktopSession, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this test's own environment at ``desktop`` (DISPLAY, DBUS_SESSION_BUS_ADDRESS)
    and return the environment for subprocesses started inside it."""
    monkeypatch.setenv("DISPLAY", desktop.display)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", desktop.bus_address)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return desktop.env()


# A clipboard tool that keeps what it is given in $TP_CLIPBOARD_FILE: in-process tray tests
# copy through the real platforms.copy_text path without an X server.
STAND_IN_XCLIP = '#!/bin/sh\ncat > "$TP_CLIPBOARD_FILE"\n'


@pytest.fixture
def clipboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that receives whatever the tray copies (through platforms.copy_text)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "xclip"
    tool.write_text(STAND_IN_XCLIP)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    copied = tmp_path / "clipboard.txt"
    monkeypatch.setenv("TP_CLIPBOARD_FILE", str(copied))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("DISPLAY", ":0")  # never opened: the stand-in tool ignores it
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return copied
