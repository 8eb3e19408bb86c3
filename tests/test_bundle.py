"""Frozen or from source: where assets are and the command autostart entries run.

The frozen cases run in a fresh interpreter given PyInstaller's two markers (``sys.frozen``,
``sys._MEIPASS``), the way the bootloader sets them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from desktop import __version__, bundle

REPO = Path(__file__).resolve().parent.parent


def run_as(*, frozen: bool | None, meipass: Path | None, executable: Path | None = None) -> dict[str, object]:
    """``is_frozen``, an asset path and the launch commands, as a process with these markers sees them."""
    code = (
        "import json, sys\n"
        + (f"sys.frozen = {frozen!r}\n" if frozen is not None else "")
        + (f"sys._MEIPASS = {str(meipass)!r}\n" if meipass is not None else "")
        + (f"sys.executable = {str(executable)!r}\n" if executable is not None else "")
        + "from desktop import bundle\n"
        "print(json.dumps({'frozen': bundle.is_frozen(), 'asset': str(bundle.asset_path('tray.png')),"
        " 'command': bundle.launch_command(), 'windows': bundle.launch_command(platform='win32')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_from_source_assets_sit_next_to_the_package() -> None:
    """Running from a checkout, icons come from assets/ beside desktop/."""
    assert not bundle.is_frozen()
    assert bundle.asset_path("tray.png") == REPO / "assets" / "tray.png"


def test_frozen_app_reads_assets_from_the_bundle_and_relaunches_itself(tmp_path: Path) -> None:
    """In the PyInstaller build the icons come from the bundle's assets folder, and autostart
    runs the app's own executable."""
    exe = tmp_path / "TrayProxy"
    seen = run_as(frozen=True, meipass=tmp_path / "_internal", executable=exe)
    assert seen == {
        "frozen": True,
        "asset": str(tmp_path / "_internal" / "assets" / "tray.png"),
        "command": [str(exe)],
        "windows": [str(exe)],
    }


def test_one_marker_alone_is_not_a_pyinstaller_bundle() -> None:
    """Other freezers set sys.frozen without _MEIPASS; assets are then looked up as from source."""
    seen = run_as(frozen=True, meipass=None)
    assert seen["frozen"] is False
    assert seen["asset"] == str(REPO / "assets" / "tray.png")


def test_windows_source_autostart_uses_the_windowless_python(tmp_path: Path) -> None:
    """From source on Windows the login entry runs pythonw.exe, so no console window opens
    at every login; without it python.exe is used."""
    python = tmp_path / "python.exe"
    seen = run_as(frozen=None, meipass=None, executable=python)
    assert seen["windows"] == [str(python), "-m", "desktop"]
    (tmp_path / "pythonw.exe").write_text("")
    seen = run_as(frozen=None, meipass=None, executable=python)
    assert seen["windows"] == [str(tmp_path / "pythonw.exe"), "-m", "desktop"]


def test_source_launch_command_starts_the_app_from_any_folder(tmp_path: Path) -> None:
    """The command an autostart entry holds works from the home folder login starts in."""
    result = subprocess.run(
        [*bundle.launch_command(), "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
