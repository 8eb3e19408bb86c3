"""The per-platform type check in .ci/run catches Windows-only mistakes that never run here.

``mypy --platform win32|darwin|linux`` ([tool.mypy] in pyproject.toml) checks the code under
``if sys.platform == ...`` for its own platform only. A copy of ``desktop/`` with one planted
misuse of ``winreg`` (the reserved argument of ``SetValueEx`` left out: a TypeError on a user's
Windows machine when they turn on "Start at login") fails the Windows check and passes the
Linux one, which is why CI runs all three. The real package passes all three (.ci/run).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy comes with the build extra (.ci/run installs it)")
pytestmark = pytest.mark.slow  # two full mypy runs: about 10 s

REPO = Path(__file__).resolve().parent.parent
SET_RUN_VALUE = "winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, format_command_line(command))"
PLANTED = "winreg.SetValueEx(key, RUN_VALUE, winreg.REG_SZ, format_command_line(command))"


def type_check(package: Path, platform: str) -> subprocess.CompletedProcess[str]:
    """mypy with the project's settings on ``package`` as ``platform`` sees it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--platform",
            platform,
            "--cache-dir",
            str(package.parent / ".mypy_cache"),
            str(package),
        ],
        cwd=package.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_winreg_misuse_fails_the_windows_check_that_linux_cannot_see(tmp_path: Path) -> None:
    package = tmp_path / "desktop"
    shutil.copytree(REPO / "desktop", package, ignore=shutil.ignore_patterns("__pycache__"))
    windows = package / "platforms" / "windows.py"
    source = windows.read_text(encoding="utf-8")
    assert source.count(SET_RUN_VALUE) == 1
    windows.write_text(source.replace(SET_RUN_VALUE, PLANTED), encoding="utf-8")

    on_windows = type_check(package, "win32")
    assert on_windows.returncode == 1, on_windows.stdout + on_windows.stderr
    [error] = [line for line in on_windows.stdout.splitlines() if ": error:" in line]
    assert "windows.py" in error
    assert '"SetValueEx"' in error

    on_linux = type_check(package, "linux")
    assert on_linux.returncode == 0, on_linux.stdout + on_linux.stderr
