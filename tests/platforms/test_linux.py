"""Linux glue: the XDG autostart entry, xdg-open, and the clipboard tools.

Exec quoting is checked against GLib's own parser (``gio launch``) when it is installed, the
clipboard against the real xclip/xsel under Xvfb; fake helper scripts cover the process
handling on machines without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faketools import install_fake, path_only, read_record
from hypothesis import given
from hypothesis import strategies as st

from desktop.platforms import (
    AutostartState,
    autostart_status,
    desktopentry,
    disable_autostart,
    enable_autostart,
    linux,
)

COMMAND = ["/opt/TrayProxy/trayproxy"]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


@pytest.mark.parametrize(
    ("argv", "exec_value"),
    [
        (["/usr/bin/trayproxy"], "/usr/bin/trayproxy"),
        (["/opt/My Apps/python", "-m", "desktop"], '"/opt/My Apps/python" -m desktop'),
        (["/usr/bin/x", "100%"], "/usr/bin/x 100%%"),
        (["/usr/bin/x", 'say "hi"'], '/usr/bin/x "say \\\\"hi\\\\""'),
        (["/usr/bin/x", "$HOME"], '/usr/bin/x "\\\\$HOME"'),
        (["/usr/bin/x", ""], '/usr/bin/x ""'),
        (["/usr/bin/x", "a\nb"], '/usr/bin/x "a\\nb"'),
    ],
)
def test_exec_line_is_quoted_as_the_desktop_entry_spec_says(argv: list[str], exec_value: str) -> None:
    """Paths with spaces, percent signs, quotes and dollars reach the app unchanged at login
    instead of being split or expanded by the session."""
    assert desktopentry.format_exec(argv) == exec_value
    assert desktopentry.parse_exec(exec_value) == argv


@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), min_size=1)
)
def test_any_command_survives_writing_and_reading_the_exec_line(argv: list[str]) -> None:
    """Whatever the install path and arguments, reading the entry back gives the command we
    wrote, so the on/off state shown in the tray is right."""
    assert desktopentry.parse_exec(desktopentry.format_exec(argv)) == argv


@pytest.mark.skipif(shutil.which("gio") is None, reason="GLib's gio tool is not installed")
def test_glib_launches_the_entry_with_the_exact_arguments(tmp_path: Path) -> None:
    """GNOME's session starts autostart entries with GLib: it runs our Exec line with every
    argument intact, spaces, quotes, dollars, percent signs and newlines included."""
    out = tmp_path / "argv.json"
    recorder = tmp_path / "dir with space" / "record argv.py"
    recorder.parent.mkdir()
    recorder.write_text(f"import json, sys\nopen({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    args = ["a b", "100%", 'q"\\$x`', "x\ny", "", "~/*", "it's"]
    home = tmp_path / "home2"
    enable_autostart(
        [sys.executable, str(recorder), *args], home=home, environ=env_for(home), platform="linux"
    )
    entry = linux.autostart_file(home=home, environ={})
    subprocess.run(["gio", "launch", str(entry)], check=True, timeout=30, capture_output=True)
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(out.read_text()) == args


def test_turning_autostart_on_writes_the_entry_and_off_removes_it(tmp_path: Path) -> None:
    """The toggle shows the truth: on writes TrayProxy.desktop in $XDG_CONFIG_HOME/autostart
    with a working Exec line, and off removes it."""
    home = tmp_path / "h"
    env = env_for(home, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    assert autostart_status(COMMAND, home=home, environ=env, platform="linux").state is AutostartState.OFF
    enable_autostart(COMMAND, home=home, environ=env, platform="linux")
    entry = tmp_path / "cfg" / "autostart" / "TrayProxy.desktop"
    text = entry.read_text()
    assert "[Desktop Entry]\n" in text
    assert "Exec=/opt/TrayProxy/trayproxy\n" in text
    assert "X-GNOME-Autostart-enabled=true\n" in text
    assert "Type=Application\n" in text
    status = autostart_status(COMMAND, home=home, environ=env, platform="linux")
    assert status.state is AutostartState.ON
    assert status.location == str(entry)
    disable_autostart(home=home, environ=env, platform="linux")
    assert not entry.exists()
    assert autostart_status(COMMAND, home=home, environ=env, platform="linux").state is AutostartState.OFF
    disable_autostart(home=home, environ=env, platform="linux")  # off twice is fine


def test_entry_goes_to_dot_config_without_a_usable_xdg_config_home(tmp_path: Path) -> None:
    """A relative XDG_CONFIG_HOME is ignored (XDG Base Directory spec), like an unset one."""
    home = tmp_path / "h"
    for env in (env_for(home), env_for(home, XDG_CONFIG_HOME="relative/dir")):
        assert linux.autostart_file(home=home, environ=env) == home / ".config/autostart/TrayProxy.desktop"


def test_entry_for_another_install_is_reported_stale_and_rewritten(tmp_path: Path) -> None:
    """After the app moved, the old entry would start nothing: it shows as not enabled, says
    where it points, and turning autostart on repoints it."""
    home = tmp_path / "h"
    env = env_for(home)
    enable_autostart(["/old/place/trayproxy"], home=home, environ=env, platform="linux")
    status = autostart_status(COMMAND, home=home, environ=env, platform="linux")
    assert status.state is AutostartState.STALE
    assert status.found_command == ("/old/place/trayproxy",)
    assert "/old/place/trayproxy" in status.describe()
    enable_autostart(COMMAND, home=home, environ=env, platform="linux")
    assert autostart_status(COMMAND, home=home, environ=env, platform="linux").state is AutostartState.ON


@pytest.mark.parametrize("switch_off", ["X-GNOME-Autostart-enabled=false", "Hidden=true"])
def test_entry_switched_off_in_the_desktop_settings_reads_as_off(tmp_path: Path, switch_off: str) -> None:
    """GNOME Tweaks or KDE's autostart page switched it off: the tray shows it off too."""
    home = tmp_path / "h"
    env = env_for(home)
    enable_autostart(COMMAND, home=home, environ=env, platform="linux")
    entry = linux.autostart_file(home=home, environ=env)
    entry.write_text(entry.read_text().replace("X-GNOME-Autostart-enabled=true", switch_off))
    assert autostart_status(COMMAND, home=home, environ=env, platform="linux").state is AutostartState.OFF


def test_writing_the_entry_leaves_no_temporary_files_and_keeps_the_icon(tmp_path: Path) -> None:
    """The autostart folder holds just our entry after rewrites (writes are atomic renames),
    and the entry names the icon when the app ships one."""
    home = tmp_path / "h"
    env = env_for(home)
    icon = tmp_path / "icon.png"
    icon.write_bytes(b"\x89PNG")
    for _ in range(3):
        linux.enable_autostart(COMMAND, home=home, environ=env, icon=icon, working_dir=tmp_path)
    folder = linux.autostart_file(home=home, environ=env).parent
    assert [p.name for p in folder.iterdir()] == ["TrayProxy.desktop"]
    text = (folder / "TrayProxy.desktop").read_text()
    assert f"Icon={icon}\n" in text
    assert f"Path={tmp_path}\n" in text
    assert oct((folder / "TrayProxy.desktop").stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_raises_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """When the autostart folder cannot be made (a file is in its way) the tray gets an
    OSError to report, not a half-written entry."""
    home = tmp_path / "h"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "autostart").write_text("not a folder")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        enable_autostart(COMMAND, home=home, environ=env_for(home), platform="linux")
    assert (home / ".config" / "autostart").read_text() == "not a folder"


# --- open_path -------------------------------------------------------------------------------


def test_open_path_hands_the_path_to_xdg_open_detached(tmp_path: Path) -> None:
    """ "Open config file" runs xdg-open with the file, with no terminal attached and in its
    own session, so closing the tray's terminal does not close the editor."""
    record = install_fake(tmp_path / "bin", "xdg-open")
    target = tmp_path / "config.toml"
    target.write_text("")
    ok, how = linux.open_path(target, environ=path_only(tmp_path / "bin"))
    assert (ok, how) == (True, "opened with xdg-open")
    seen = read_record(record)
    assert seen["argv"] == [str(target)]
    assert seen["stdin_target"] == "/dev/null"
    assert seen["sid"] != os.getsid(0)


def test_open_path_explains_xdg_open_failures(tmp_path: Path) -> None:
    """No application for the file type: the tray says so instead of doing nothing."""
    install_fake(tmp_path / "bin", "xdg-open", exit_code=4)
    ok, how = linux.open_path(tmp_path, environ=path_only(tmp_path / "bin"))
    assert not ok
    assert how == f"xdg-open could not open {tmp_path}: no application could open it"


def test_open_path_reports_an_opener_that_keeps_running_as_opened(tmp_path: Path) -> None:
    """Some xdg-open fallbacks run the viewer in the foreground; that is success, and the
    tray does not wait for the viewer to close."""
    install_fake(tmp_path / "bin", "xdg-open", linger_s=3)
    ok, how = linux.open_path(tmp_path, environ=path_only(tmp_path / "bin"))
    assert (ok, how) == (True, "opened with xdg-open")


def test_open_path_names_what_to_install_or_what_is_missing(tmp_path: Path) -> None:
    """Without xdg-open the message names the package; a missing file is named too."""
    (tmp_path / "bin").mkdir()
    assert linux.open_path(tmp_path, environ=path_only(tmp_path / "bin")) == (
        False,
        "xdg-open was not found: install xdg-utils",
    )
    missing = tmp_path / "nope.log"
    assert linux.open_path(missing, environ=path_only(tmp_path / "bin")) == (
        False,
        f"{missing} does not exist",
    )


def test_frozen_app_gives_system_tools_the_persons_library_path(tmp_path: Path) -> None:
    """A PyInstaller build points LD_LIBRARY_PATH into the bundle; xdg-open gets the person's
    own value back (LD_LIBRARY_PATH_ORIG) so system programs do not load our libraries."""
    record = install_fake(tmp_path / "bin", "xdg-open")
    env = {
        **path_only(tmp_path / "bin"),
        "LD_LIBRARY_PATH": "/tmp/_MEI123",
        "LD_LIBRARY_PATH_ORIG": "/usr/local/lib",
    }
    assert linux.open_path(tmp_path, environ=env)[0]
    seen = read_record(record)
    assert isinstance(seen["env"], dict)
    assert seen["env"].get("LD_LIBRARY_PATH") == "/usr/local/lib"


# --- copy_text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "package"),
    [({"WAYLAND_DISPLAY": "wayland-0"}, "wl-clipboard"), ({"DISPLAY": ":0"}, "xclip")],
)
def test_copy_names_the_package_to_install_when_no_tool_exists(
    tmp_path: Path, env: dict[str, str], package: str
) -> None:
    """ "Copy address" without any clipboard tool tells the person what to install."""
    (tmp_path / "bin").mkdir()
    ok, how = linux.copy_text("http://127.0.0.1:8000", environ={**path_only(tmp_path / "bin"), **env})
    assert not ok
    assert how == f"no clipboard tool found: install {package}"


def test_copy_without_a_display_says_there_is_no_clipboard(tmp_path: Path) -> None:
    """Run from a plain ssh session, copying fails with a reason instead of hanging."""
    ok, how = linux.copy_text("x", environ=path_only(tmp_path))
    assert not ok
    assert "neither WAYLAND_DISPLAY nor DISPLAY" in how


def test_copy_uses_wl_copy_on_wayland_and_returns_while_it_serves(tmp_path: Path) -> None:
    """On Wayland the text goes to wl-copy's stdin; wl-copy (like xclip) leaves a child
    serving the clipboard with our descriptors, and copying still returns at once."""
    record = install_fake(tmp_path / "bin", "wl-copy", read_stdin=True, fork_child=True)
    install_fake(tmp_path / "bin", "xclip", exit_code=9)
    env = {**path_only(tmp_path / "bin"), "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert linux.copy_text("héllo ✓", environ=env) == (True, "copied with wl-copy")
    seen = read_record(record)
    assert seen["stdin"] == "héllo ✓"
    assert seen["argv"] == []


def test_copy_falls_back_to_the_next_tool_and_hides_the_text_in_errors(tmp_path: Path) -> None:
    """A broken xclip does not stop xsel from copying; when all fail, the message quotes the
    tools' complaints but never the copied text itself."""
    install_fake(tmp_path / "bin", "xclip", exit_code=1, stderr="Error: cannot open display sk-secret123\n")
    record = install_fake(tmp_path / "bin", "xsel", read_stdin=True)
    env = {**path_only(tmp_path / "bin"), "DISPLAY": ":0"}
    assert linux.copy_text("sk-secret123", environ=env) == (True, "copied with xsel")
    assert read_record(record)["argv"] == ["--clipboard", "--input"]
    install_fake(tmp_path / "bin", "xsel", exit_code=1)
    ok, how = linux.copy_text("sk-secret123", environ=env)
    assert not ok
    assert "xclip failed (exit 1): Error: cannot open display ***" in how
    assert "xsel failed (exit 1)" in how
    assert "sk-secret123" not in how


@pytest.fixture
def xvfb_display(tmp_path: Path) -> Iterator[str]:
    """A real X server (Xvfb) on a free display number, for the real clipboard tools."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display and writes its number to the pipe when ready.
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:
            number = ready.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("tool", ["xclip", "xsel"])
def test_copied_text_is_on_the_real_x11_clipboard(xvfb_display: str, tool: str) -> None:
    """With the real xclip or xsel and a real X server, the pasted text is exactly what the
    tray copied, non-ASCII included."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    env = {"PATH": os.environ["PATH"], "DISPLAY": xvfb_display, "HOME": os.environ["HOME"]}
    tools = [t for t in linux.clipboard_tools(env) if t[0] == tool]
    text = "http://127.0.0.1:8000/v1 — ✓ héllo"
    assert linux.copy_text(text, environ=env, tools=tools) == (True, f"copied with {tool}")
    paste = (
        ["xclip", "-selection", "clipboard", "-o"]
        if shutil.which("xclip")
        else ["xsel", "--clipboard", "--output"]
    )
    # xsel claims the clipboard in the child it forks after its parent exits, a moment after
    # copy_text returns; poll briefly, as a paste a moment later would.
    deadline = time.monotonic() + 10
    while True:
        pasted = subprocess.run(paste, env=env, capture_output=True, timeout=10, check=False)
        if pasted.stdout.decode("utf-8") == text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pasted.stdout.decode("utf-8") == text
