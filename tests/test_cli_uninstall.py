"""``trayproxy uninstall [--keys] [--config PATH]`` as a person runs it: a real subprocess with
this test's HOME and XDG dirs (conftest), the real login and menu entries on disk, and for keys
the file keychain (``file_keyring``), which the subprocess uses through keyring's own API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from cli_process import run_cli

from desktop import platforms
from desktop.platforms import linux

REPO = Path(__file__).resolve().parent.parent
SERVICE = "TrayProxy"
KEY_A = "sk-uninstall-a-0123456789abcdef"
KEY_SHARED = "sk-uninstall-shared-0123456789"
KEY_OTHER = "sk-uninstall-other-0123456789"
CONFIG = """\
active = "a"

[targets.a]
url = "https://a.example.test"
headers = { Authorization = "Bearer {key}" }
key = { keyring = true }

[targets.b]
url = "https://b.example.test"
headers = { Authorization = "Bearer {key}" }
key = { keyring = "shared" }

[targets.c]
url = "https://c.example.test"
headers = { Authorization = "Bearer {key}" }
key = { env = "C_TOKEN" }
"""

needs_xdg = pytest.mark.skipif(not platforms.supports_desktop_entry(), reason="XDG desktops only")




def env_paths() -> tuple[Path, dict[str, str]]:
    return Path.home(), dict(os.environ)


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@needs_xdg
def test_uninstall_removes_login_and_menu_entries_and_says_where_the_config_is() -> None:
    """After uninstall TrayProxy no longer starts at login nor sits in the menu; each removed
    file is named, and the config file (kept) and the log folder are pointed at."""
    home, env = env_paths()
    platforms.enable_autostart()
    assert run_cli("desktop-entry", "install").returncode == 0
    autostart = linux.autostart_file(home=home, environ=env)
    entry = linux.applications_file(home=home, environ=env)
    icon = linux.installed_icon_file(home=home, environ=env)
    assert autostart.is_file()
    assert entry.is_file()
    assert icon.is_file()
    config = run_cli("config", "path").stdout.strip()
    Path(config).parent.mkdir(parents=True, exist_ok=True)
    Path(config).write_text('active = "x"\n\n[targets.x]\nurl = "https://x.example.test"\n', encoding="utf-8")

    result = run_cli("uninstall")

    assert result.returncode == 0, result.stderr
    assert not autostart.exists()
    assert not entry.exists()
    assert not icon.exists()
    for path in (autostart, entry, icon):
        assert str(path) in result.stdout
    assert f"kept your config file: {config}" in result.stdout
    assert Path(config).is_file()
    assert str(Path(os.environ["XDG_STATE_HOME"]) / "TrayProxy" / "log") in result.stdout
    assert not platforms.is_autostart_enabled()


@needs_xdg
def test_a_login_entry_switched_off_in_the_desktop_settings_is_removed_too() -> None:
    """An entry the person switched off (Hidden=true) is still TrayProxy's file: it goes."""
    home, env = env_paths()
    platforms.enable_autostart()
    autostart = linux.autostart_file(home=home, environ=env)
    autostart.write_text(autostart.read_text(encoding="utf-8") + "Hidden=true\n", encoding="utf-8")
    assert not platforms.is_autostart_enabled()
    result = run_cli("uninstall")
    assert result.returncode == 0, result.stderr
    assert f"removed the login entry {autostart}" in result.stdout
    assert not autostart.exists()


def test_uninstall_with_nothing_installed_says_so() -> None:
    """Running it twice, or before anything was installed, is fine: it says there was nothing."""
    result = run_cli("uninstall")
    assert result.returncode == 0, result.stderr
    assert "does not start at login: nothing to remove" in result.stdout
    assert "removed" not in result.stdout


def test_keys_removes_only_the_configs_keychain_entries(file_keyring: Path, tmp_path: Path) -> None:
    """--keys deletes TrayProxy's keychain entries of the targets that read them (the target's
    name, or the account it names), keeps every other entry, and never prints a key."""
    config = write_config(tmp_path)
    keyring.set_password(SERVICE, "a", KEY_A)
    keyring.set_password(SERVICE, "shared", KEY_SHARED)
    keyring.set_password(SERVICE, "not-in-config", KEY_OTHER)
    keyring.set_password("SomeOtherApp", "a", KEY_OTHER)

    result = run_cli("uninstall", "--keys", "--config", str(config))

    assert result.returncode == 0, result.stderr
    assert keyring.get_password(SERVICE, "a") is None
    assert keyring.get_password(SERVICE, "shared") is None
    assert keyring.get_password(SERVICE, "not-in-config") == KEY_OTHER
    assert keyring.get_password("SomeOtherApp", "a") == KEY_OTHER
    assert "removed the keychain entry TrayProxy / 'a' (target a)" in result.stdout
    assert "removed the keychain entry TrayProxy / 'shared' (target b)" in result.stdout
    assert "'c'" not in result.stdout
    assert f"kept your config file: {config}" in result.stdout
    assert config.read_text(encoding="utf-8") == CONFIG
    output = result.stdout + result.stderr
    for key in (KEY_A, KEY_SHARED, KEY_OTHER):
        assert key not in output
        assert key[:12] not in output


def test_without_keys_the_keychain_is_left_alone(file_keyring: Path, tmp_path: Path) -> None:
    """Plain uninstall keeps the keys (a reinstall would need them) and says how to delete them."""
    config = write_config(tmp_path)
    keyring.set_password(SERVICE, "a", KEY_A)
    before = file_keyring.read_text(encoding="utf-8")
    result = run_cli("uninstall", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert json.loads(file_keyring.read_text(encoding="utf-8")) == json.loads(before)
    assert "--keys" in result.stdout


def test_a_keychain_entry_already_gone_is_not_an_error(file_keyring: Path, tmp_path: Path) -> None:
    """A target whose key was never stored (or was deleted) is reported, and the run succeeds."""
    config = write_config(tmp_path)
    keyring.set_password(SERVICE, "shared", KEY_SHARED)
    result = run_cli("uninstall", "--keys", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "no keychain entry TrayProxy / 'a' (target a)" in result.stdout
    assert keyring.get_password(SERVICE, "shared") is None


@needs_xdg
def test_no_keychain_in_the_session_fails_the_keys_but_not_the_rest(tmp_path: Path) -> None:
    """Without a keychain (conftest gives subprocesses keyring's "none" backend), --keys says
    the entries were not removed and exits 1, while the menu entry is still taken out."""
    config = write_config(tmp_path)
    assert run_cli("desktop-entry", "install").returncode == 0
    home, env = env_paths()
    result = run_cli("uninstall", "--keys", "--config", str(config))
    assert result.returncode == 1
    assert "no OS keychain" in result.stderr
    assert not linux.applications_file(home=home, environ=env).exists()


def test_a_broken_config_is_pointed_at_and_no_key_is_touched(file_keyring: Path, tmp_path: Path) -> None:
    """With --keys and a config that does not parse, the problem is shown with its place,
    the keychain keeps its entries, and the exit status is 1."""
    config = write_config(tmp_path, CONFIG + "\n[targets.d\n")
    keyring.set_password(SERVICE, "a", KEY_A)
    result = run_cli("uninstall", "--keys", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:" in result.stderr
    assert keyring.get_password(SERVICE, "a") == KEY_A
    assert KEY_A not in result.stdout + result.stderr


# Holds the instance lock the way a running tray does, until stdin closes.
HOLD_INSTANCE_LOCK = """
import sys
from desktop.platforms import instance
lock = instance.acquire(lambda: None)
assert lock is not None and lock.held
print("holding", flush=True)
sys.stdin.read()
"""


def test_uninstall_says_when_trayproxy_is_still_running() -> None:
    """A running tray (it holds the instance lock) is named, so the person quits it before
    deleting its folder; nothing is said when none runs (the test above)."""
    assert "still running" not in run_cli("uninstall").stderr
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_INSTANCE_LOCK],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        result = run_cli("uninstall")
        assert result.returncode == 0, result.stderr
        assert "TrayProxy is still running: choose Quit in its tray menu" in result.stderr
    finally:
        holder.communicate("", timeout=10)
