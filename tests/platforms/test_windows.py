"""Windows glue: the Run value's command line and Task Manager's flag, tested on any OS; the
registry round trip itself runs only on Windows."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desktop.platforms import windows


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        ([r"C:\Program Files\TrayProxy\TrayProxy.exe"], r'"C:\Program Files\TrayProxy\TrayProxy.exe"'),
        ([r"C:\Py\pythonw.exe", "-m", "desktop"], r"C:\Py\pythonw.exe -m desktop"),
        ([r"C:\x.exe", "a b\\"], r'C:\x.exe "a b\\"'),
        ([r"C:\x.exe", 'say "hi"'], r'C:\x.exe "say \"hi\""'),
        ([r"C:\x.exe", ""], r'C:\x.exe ""'),
    ],
)
def test_run_value_is_a_command_line_windows_splits_back(argv: list[str], line: str) -> None:
    """Install paths with spaces (Program Files) and arguments with quotes or a trailing
    backslash start the app correctly at login."""
    assert windows.format_command_line(argv) == line
    assert windows.split_command_line(line) == argv


# Program paths: no quotes (Windows forbids them in file names), no blanks at the ends and no
# trailing backslash (a file path never ends in one; Windows reads the program name without
# escapes, so such a name would not round-trip there either).
programs = st.text(
    st.characters(blacklist_characters='"\x00\t', blacklist_categories=("Cs",)), min_size=1
).map(lambda s: s.strip(" ").rstrip("\\") or "x")
arguments = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@given(programs, st.lists(arguments))
def test_any_command_survives_the_run_value(program: str, args: list[str]) -> None:
    """Reading the Run value back gives the command we wrote, so the tray's check mark and
    the stale check are right for any path and arguments."""
    argv = [program, *args]
    assert windows.split_command_line(windows.format_command_line(argv)) == argv


def test_task_manager_switch_and_path_case_are_read_as_windows_means_them() -> None:
    """Switched off in Task Manager reads as off; a program path differing only in case is
    the same install."""
    assert windows.is_approved(None)
    assert windows.is_approved(bytes([2]) + bytes(11))
    assert not windows.is_approved(bytes([3]) + bytes(11))
    assert windows.is_same_command([r"C:\PROGRAM FILES\T.exe", "-x"], [r"C:\Program Files\T.exe", "-x"])
    assert not windows.is_same_command([r"C:\T.exe", "-X"], [r"C:\T.exe", "-x"])


@pytest.mark.skipif(sys.platform != "win32", reason="the registry exists only on Windows")
def test_run_value_round_trip_in_the_real_registry() -> None:
    """On Windows: on writes the HKCU Run value and clears Task Manager's off flag, off
    deletes it, and the state is read back from the registry."""
    from desktop.platforms import AutostartState, autostart_status, disable_autostart, enable_autostart

    command = [sys.executable, "-m", "desktop", "--test-entry"]
    try:
        enable_autostart(command)
        assert autostart_status(command).state is AutostartState.ON
        assert autostart_status([*command, "x"]).state is AutostartState.STALE
    finally:
        disable_autostart()
    assert autostart_status(command).state is AutostartState.OFF


def test_windows_module_imports_without_windows() -> None:
    """Every per-OS module imports on every OS (winreg and ctypes stay inside functions), so
    the one build and the test suite work everywhere."""
    code = "import sys; import desktop.platforms.windows, desktop.platforms.macos, desktop.platforms.linux, desktop.platforms.instance; print(sorted(m for m in ('winreg', 'msvcrt', 'AppKit', 'ctypes.wintypes') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"
