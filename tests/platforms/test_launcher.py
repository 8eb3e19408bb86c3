"""The Linux application-menu launcher: ``trayproxy desktop-entry install|remove``.

The CLI runs as a real subprocess with this test's HOME and XDG dirs (conftest); the entry is
read back with our own reader, run as the menu would run it, and checked with
``desktop-file-validate`` (desktop-file-utils) where that is installed. Functions with a
command of our choosing (spaces, percent signs) are called in-process with paths passed in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_process import run_cli

from desktop import __version__, bundle, cli, platforms
from desktop.platforms import desktopentry, linux

REPO = Path(__file__).resolve().parent.parent.parent
# Bound on one CLI run that only writes or deletes a few files.
CLI_TIMEOUT_S = 30.0
# Bound on the menu's command answering --version (an interpreter start and our imports).
LAUNCH_TIMEOUT_S = 30.0
ICON_SOURCE = bundle.asset_path(linux.ICON_ASSET)
# PNG signature and the IHDR width/height offsets (PNG spec, sections 5.2 and 11.2.2).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IHDR_SIZE_SLICE = slice(16, 24)
ICON_SIZE_PX = 256

needs_linux = pytest.mark.skipif(not platforms.supports_desktop_entry(), reason="XDG desktops only")




def data_home() -> Path:
    return Path(os.environ["XDG_DATA_HOME"])


def entry_path() -> Path:
    return data_home() / "applications" / "trayproxy.desktop"


def icon_path() -> Path:
    return data_home() / "icons" / "hicolor" / "256x256" / "apps" / "trayproxy.png"


def validate(path: Path) -> None:
    """Fail on anything desktop-file-validate reports: an error, a warning, or a hint (two
    main categories, which can list the app twice in a menu, is only a hint)."""
    program = shutil.which("desktop-file-validate")
    if program is None:
        pytest.skip("desktop-file-validate is not installed (apt install desktop-file-utils)")
    result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.stdout.strip() == "", result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


@needs_linux
def test_installed_entry_puts_this_copy_in_the_menu_with_its_icon() -> None:
    """After `desktop-entry install` the menu lists TrayProxy with its own icon, starting the
    interpreter and checkout this command ran from, without a terminal window."""
    result = run_cli("desktop-entry", "install")
    assert result.returncode == 0, result.stderr
    assert str(entry_path()) in result.stdout
    keys = desktopentry.read_entry(entry_path())
    assert keys["Name"] == "TrayProxy"
    assert keys["Type"] == "Application"
    assert keys["Comment"]
    assert desktopentry.parse_exec(keys["Exec"]) == [sys.executable, "-m", "desktop"]
    assert keys["Path"] == str(REPO)
    assert keys["Terminal"] == "false"
    assert keys["StartupNotify"] == "false"
    assert keys["Categories"] == "Development;"
    assert keys["Icon"] == "trayproxy"
    icon = icon_path().read_bytes()
    assert icon == ICON_SOURCE.read_bytes()
    assert icon.startswith(PNG_SIGNATURE)
    size = icon[IHDR_SIZE_SLICE]
    assert (int.from_bytes(size[:4], "big"), int.from_bytes(size[4:], "big")) == (ICON_SIZE_PX, ICON_SIZE_PX)


@needs_linux
def test_menu_command_starts_trayproxy() -> None:
    """The command the menu runs, from the folder the entry names, is a working TrayProxy
    (asked for --version so no tray opens)."""
    assert run_cli("desktop-entry", "install").returncode == 0
    keys = desktopentry.read_entry(entry_path())
    argv = desktopentry.parse_exec(keys["Exec"])
    assert Path(desktopentry.unescape_string(keys["TryExec"])).is_file()
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [*argv, "--version"],
        cwd=keys["Path"],
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"TrayProxy {__version__}"


@needs_linux
def test_the_remove_command_in_the_entrys_comment_works_for_this_copy() -> None:
    """The entry's comment says how to take it out again; run as written in a shell (from a
    checkout, with no `trayproxy` on PATH), it removes the entry and the icon."""
    assert run_cli("desktop-entry", "install").returncode == 0
    comments = [line for line in entry_path().read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert comments[0] == "# Written by TrayProxy (desktop-entry install). Remove it with:"
    command = comments[1].removeprefix("#").strip()
    assert command.endswith(" -m desktop desktop-entry remove")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env["PATH"] = "/usr/bin:/bin"  # no trayproxy here, as in a clone's shell
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd="/", capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env
    )
    assert result.returncode == 0, result.stderr
    assert not entry_path().exists()
    assert not icon_path().exists()


@needs_linux
def test_installed_entry_passes_desktop_file_validate() -> None:
    """Desktops ignore an entry that breaks the spec; the one we install has no errors."""
    assert run_cli("desktop-entry", "install").returncode == 0
    validate(entry_path())


def test_awkward_command_is_quoted_so_the_menu_runs_it_unchanged(tmp_path: Path) -> None:
    """A checkout under a folder with spaces, quotes or a percent sign still starts: the Exec
    line reads back as the same arguments and passes desktop-file-validate."""
    home = tmp_path / "h"
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    command = ["/opt/my apps/py\"thon", "-m", "desktop", "50%", "$HOME", "a\\b"]
    written = linux.install_desktop_entry(
        command, home=home, environ=env, working_dir=tmp_path / "with space", icon=ICON_SOURCE
    )
    entry = linux.applications_file(home=home, environ=env)
    assert written == [linux.installed_icon_file(home=home, environ=env), entry]
    keys = desktopentry.read_entry(entry)
    assert desktopentry.parse_exec(keys["Exec"]) == command
    assert desktopentry.unescape_string(keys["Path"]) == str(tmp_path / "with space")
    validate(entry)


def test_reinstall_replaces_the_entry_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Installing again after moving the checkout points the menu at the new place, and the
    folders hold only the entry and the icon (no half-written leftovers)."""
    home = tmp_path / "h"
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    linux.install_desktop_entry(["/old/python", "-m", "desktop"], home=home, environ=env, icon=ICON_SOURCE)
    linux.install_desktop_entry(["/new/python", "-m", "desktop"], home=home, environ=env, icon=ICON_SOURCE)
    entry = linux.applications_file(home=home, environ=env)
    assert desktopentry.parse_exec(desktopentry.read_entry(entry)["Exec"]) == ["/new/python", "-m", "desktop"]
    assert sorted(p.name for p in entry.parent.iterdir()) == ["trayproxy.desktop"]
    icon = linux.installed_icon_file(home=home, environ=env)
    assert sorted(p.name for p in icon.parent.iterdir()) == ["trayproxy.png"]


def test_without_an_icon_file_the_entry_names_none(tmp_path: Path) -> None:
    """An install with no icon asset (a wheel ships none) writes an entry without Icon, which
    still validates; an icon copied by an earlier install is used again."""
    home = tmp_path / "h"
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    missing = tmp_path / "no-such-icon.png"
    written = linux.install_desktop_entry(["/usr/bin/python3"], home=home, environ=env, icon=missing)
    entry = linux.applications_file(home=home, environ=env)
    assert written == [entry]
    assert "Icon" not in desktopentry.read_entry(entry)
    validate(entry)
    linux.install_desktop_entry(["/usr/bin/python3"], home=home, environ=env, icon=ICON_SOURCE)
    linux.install_desktop_entry(["/usr/bin/python3"], home=home, environ=env, icon=missing)
    assert desktopentry.read_entry(entry)["Icon"] == "trayproxy"


def test_a_relative_xdg_data_home_is_ignored(tmp_path: Path) -> None:
    """The XDG Base Directory spec says to ignore a relative value: the entry goes to
    ~/.local/share/applications, not to a folder relative to wherever the command ran."""
    home = tmp_path / "h"
    entry = linux.applications_file(home=home, environ={"XDG_DATA_HOME": "relative/data"})
    assert entry == home / ".local" / "share" / "applications" / "trayproxy.desktop"
    assert linux.applications_file(home=home, environ={}) == entry


@needs_linux
def test_remove_deletes_the_entry_and_icon_and_nothing_else() -> None:
    """`desktop-entry remove` takes TrayProxy out of the menu and its icon out of the theme,
    leaving other applications' entries and icons alone; a second remove says there is nothing."""
    assert run_cli("desktop-entry", "install").returncode == 0
    other_entry = entry_path().parent / "other.desktop"
    other_entry.write_text("[Desktop Entry]\nType=Application\nName=Other\nExec=other\n")
    other_icon = icon_path().parent / "other.png"
    other_icon.write_bytes(ICON_SOURCE.read_bytes())
    result = run_cli("desktop-entry", "remove")
    assert result.returncode == 0, result.stderr
    assert f"removed {entry_path()}" in result.stdout
    assert f"removed {icon_path()}" in result.stdout
    assert not entry_path().exists()
    assert not icon_path().exists()
    assert other_entry.is_file()
    assert other_icon.is_file()
    again = run_cli("desktop-entry", "remove")
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_desktop_entry_is_refused_off_linux(
    platform: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On Windows and macOS the command says it is for Linux, exits 2 and writes nothing."""
    monkeypatch.setattr(sys, "platform", platform)
    assert cli.main(["desktop-entry", "install"]) == 2
    assert "Linux" in capsys.readouterr().err
    assert not (data_home() / "applications").exists()
    with pytest.raises(NotImplementedError):
        platforms.install_desktop_entry(platform=platform)
    assert platforms.remove_desktop_entry(platform=platform) == []


@needs_linux
def test_an_install_without_assets_draws_the_app_icon(tmp_path: Path) -> None:
    """An installed wheel (pipx) has the package but no assets/ folder: the menu entry still gets
    TrayProxy's icon, drawn by the app, with the same pixels as the checkout's file."""
    from PIL import Image, ImageChops

    package_only = tmp_path / "site"
    shutil.copytree(REPO / "desktop", package_only / "desktop", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "desktop", "desktop-entry", "install"],
        cwd=package_only,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(package_only)},
    )
    assert done.returncode == 0, done.stderr
    assert str(icon_path()) in done.stdout
    assert desktopentry.read_entry(entry_path())["Icon"] == "trayproxy"
    with Image.open(icon_path()) as drawn, Image.open(ICON_SOURCE) as shipped:
        assert drawn.size == (ICON_SIZE_PX, ICON_SIZE_PX)
        assert ImageChops.difference(drawn.convert("RGBA"), shipped.convert("RGBA")).getbbox() is None
    assert not list(package_only.glob("assets")), "the copy really had no assets"
