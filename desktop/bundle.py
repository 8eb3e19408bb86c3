"""Frozen or from source: where the app's own files are and how to start it again.

PyInstaller's bootloader sets ``sys.frozen`` and ``sys._MEIPASS`` (the folder holding the
bundled data: the ``_internal`` folder of a onedir build, the unpack folder of a onefile build,
``Contents/Frameworks`` of a macOS ``.app``). The bundle carries an ``assets`` folder there; from
source, ``assets/`` sits next to the ``desktop`` package. This module imports nothing from
``desktop`` (STYLE.md, module map row 1), so anything may use it.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["ASSETS_DIR_NAME", "asset_path", "is_frozen", "launch_command", "source_root"]

ASSETS_DIR_NAME = "assets"
# The module the source checkout runs as (`python -m desktop`).
SOURCE_MODULE = "desktop"
# On Windows the console-less interpreter next to python.exe: an autostart entry that runs
# python.exe would open a console window at every login.
WINDOWS_GUI_PYTHON = "pythonw.exe"


def is_frozen() -> bool:
    """True inside a PyInstaller bundle (both of its markers set), False from source."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def source_root() -> Path:
    """The folder holding the ``desktop`` package (the checkout, or site-packages)."""
    return Path(__file__).resolve().parent.parent


def asset_path(name: str) -> Path:
    """Where the asset ``name`` is: ``<bundle data>/assets/name`` frozen, else ``assets/name``
    next to the package. The file may not exist; the caller decides what a missing one means."""
    base = Path(sys._MEIPASS) if is_frozen() else source_root()  # type: ignore[attr-defined]
    return base / ASSETS_DIR_NAME / name


def launch_command(*, platform: str = sys.platform) -> list[str]:
    """The command that starts the tray app again, for autostart entries.

    Frozen: the executable itself (for a onefile build ``sys.executable`` is the file the person
    launched, not the unpack folder). From source: ``[python, "-m", "desktop"]``, with
    ``pythonw.exe`` on Windows when it is there, so login opens no console window.
    """
    if is_frozen():
        return [sys.executable]
    python = Path(sys.executable)
    if platform == "win32":
        windowless = python.with_name(WINDOWS_GUI_PYTHON)
        if windowless.is_file():
            python = windowless
    return [str(python), "-m", SOURCE_MODULE]
