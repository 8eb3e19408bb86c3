"""The dispatch point the tray calls: right implementation per OS, never raising for desktop
actions, and the default command being this copy's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from faketools import install_fake, path_only

from desktop import bundle, platforms
from desktop.platforms import AutostartState


def test_default_command_is_this_copy_so_a_fresh_entry_reads_as_on(tmp_path: Path) -> None:
    """Turning autostart on without naming a command writes how this copy is started, and
    the tray's check mark then shows on."""
    env = {"HOME": str(tmp_path)}
    platforms.enable_autostart(home=tmp_path, environ=env, platform="linux")
    assert platforms.is_autostart_enabled(home=tmp_path, environ=env, platform="linux")
    status = platforms.autostart_status(home=tmp_path, environ=env, platform="linux")
    assert status.found_command == tuple(bundle.launch_command())
    assert status.describe().startswith("starts at login (")
    platforms.disable_autostart(home=tmp_path, environ=env, platform="linux")
    assert not platforms.is_autostart_enabled(home=tmp_path, environ=env, platform="linux")


def test_stale_entry_is_not_reported_as_enabled(tmp_path: Path) -> None:
    """An entry for another install does not tick "Start at login"."""
    platforms.enable_autostart(["/elsewhere/trayproxy"], home=tmp_path, environ={}, platform="darwin")
    assert not platforms.is_autostart_enabled(
        ["/here/trayproxy"], home=tmp_path, environ={}, platform="darwin"
    )
    status = platforms.autostart_status(["/here/trayproxy"], home=tmp_path, environ={}, platform="darwin")
    assert status.state is AutostartState.STALE


def test_desktop_actions_never_raise(tmp_path: Path) -> None:
    """A path the OS rejects outright or a tool that cannot run gives (False, reason); the
    tray's menu action cannot crash the tray."""
    ok, how = platforms.open_path("bad\x00path", environ=path_only(tmp_path), platform="linux")
    assert (ok, how) == (False, "bad\x00path does not exist")
    broken = tmp_path / "bin" / "xclip"
    broken.parent.mkdir()
    broken.write_text("not a program")
    broken.chmod(0o755)
    ok, how = platforms.copy_text(
        "sk-secret", environ={**path_only(tmp_path / "bin"), "DISPLAY": ":0"}, platform="linux"
    )
    assert not ok
    assert how.startswith("could not start xclip")
    assert "sk-secret" not in how


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks the Linux opener")
def test_dispatch_uses_this_os_by_default(tmp_path: Path) -> None:
    """Without a platform argument the running OS's implementation is used (here: the
    fake opener on PATH is called on Linux)."""
    record = install_fake(tmp_path / "bin", "xdg-open")
    assert platforms.open_path(tmp_path, environ=path_only(tmp_path / "bin")) == (
        True,
        "opened with xdg-open",
    )
    assert record.exists()
