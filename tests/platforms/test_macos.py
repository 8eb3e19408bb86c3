"""macOS glue tested on any OS: the LaunchAgent plist in a temp home, ``open`` and ``pbcopy``
replaced by recording scripts on a temp PATH."""

from __future__ import annotations

import plistlib
from pathlib import Path

from faketools import install_fake, path_only, read_record

from desktop.platforms import AutostartState, autostart_status, disable_autostart, enable_autostart, macos

COMMAND = ["/Applications/TrayProxy.app/Contents/MacOS/TrayProxy"]


def test_login_agent_runs_once_at_login_and_quit_stays_quit(tmp_path: Path) -> None:
    """Turning autostart on writes a LaunchAgent that starts the app at login (RunAtLoad) and
    never restarts it after Quit (no KeepAlive); turning it off removes the file."""
    status = autostart_status(COMMAND, home=tmp_path, environ={}, platform="darwin")
    assert status.state is AutostartState.OFF
    enable_autostart(COMMAND, home=tmp_path, environ={}, platform="darwin")
    path = tmp_path / "Library" / "LaunchAgents" / f"{macos.LAUNCH_AGENT_LABEL}.plist"
    agent = plistlib.loads(path.read_bytes())
    assert agent["Label"] == macos.LAUNCH_AGENT_LABEL
    assert agent["ProgramArguments"] == COMMAND
    assert agent["RunAtLoad"] is True
    assert "KeepAlive" not in agent
    assert autostart_status(COMMAND, home=tmp_path, environ={}, platform="darwin").state is AutostartState.ON
    disable_autostart(home=tmp_path, environ={}, platform="darwin")
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir()] == []


def test_agent_for_a_moved_app_is_stale_and_a_disabled_one_is_off(tmp_path: Path) -> None:
    """An agent still pointing at the app's old location is reported stale (it would start
    nothing); one marked Disabled is off."""
    macos.enable_autostart(["/Users/me/Downloads/TrayProxy.app/Contents/MacOS/TrayProxy"], home=tmp_path)
    status = autostart_status(COMMAND, home=tmp_path, environ={}, platform="darwin")
    assert status.state is AutostartState.STALE
    assert status.found_command == ("/Users/me/Downloads/TrayProxy.app/Contents/MacOS/TrayProxy",)
    path = macos.autostart_file(home=tmp_path)
    agent = plistlib.loads(path.read_bytes())
    path.write_bytes(plistlib.dumps({**agent, "Disabled": True}))
    assert autostart_status(COMMAND, home=tmp_path, environ={}, platform="darwin").state is AutostartState.OFF
    path.write_bytes(b"not a plist")
    assert autostart_status(COMMAND, home=tmp_path, environ={}, platform="darwin").state is AutostartState.OFF


def test_copy_feeds_pbcopy_utf8_with_a_utf8_locale(tmp_path: Path) -> None:
    """Started from Finder the app has no LANG, and pbcopy would garble non-ASCII text; it
    gets a UTF-8 locale and the UTF-8 bytes."""
    record = install_fake(tmp_path / "bin", "pbcopy", read_stdin=True)
    assert macos.copy_text("héllo ✓", environ=path_only(tmp_path / "bin")) == (True, "copied with pbcopy")
    seen = read_record(record)
    assert seen["stdin"] == "héllo ✓"
    assert seen["env"] == {"LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}


def test_open_hands_the_folder_to_open_and_reports_its_failure(tmp_path: Path) -> None:
    """ "Open log folder" runs `open <folder>`; when open fails, its own reason is shown."""
    record = install_fake(tmp_path / "bin", "open")
    assert macos.open_path(tmp_path, environ=path_only(tmp_path / "bin")) == (True, "opened with open")
    assert read_record(record)["argv"] == [str(tmp_path)]
    install_fake(tmp_path / "bin", "open", exit_code=1, stderr="No application knows how to open it.\n")
    assert macos.open_path(tmp_path, environ=path_only(tmp_path / "bin")) == (
        False,
        "open failed (exit 1): No application knows how to open it.",
    )
