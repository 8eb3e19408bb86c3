"""``trayproxy desktop-entry install|remove`` and ``trayproxy uninstall``: what TrayProxy puts
outside its own folder (the application-menu entry and its icon, the login entry, keychain
entries), put in and taken out.

Run by ``desktop.cli`` (which holds the parser and the help) for these two commands only. The
tray's icon drawing is imported only when no icon file ships (a wheel), and nothing here starts
the proxy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

__all__ = ["run_desktop_entry", "run_uninstall"]


def _app_icon_file(scratch: Path) -> Path:
    """The app icon as a PNG file: the one in assets/ (checkout, bundle), or, for an installed
    wheel, which carries no assets/ (pipx), the same icon drawn now into ``scratch``."""
    from desktop import bundle
    from desktop.platforms.linux import ICON_ASSET, ICON_SIZE_PX

    shipped = bundle.asset_path(ICON_ASSET)
    if shipped.is_file():
        return shipped
    from desktop.tray.icons import draw_app_icon

    drawn = scratch / Path(ICON_ASSET).name
    draw_app_icon(ICON_SIZE_PX).save(drawn, format="PNG")
    return drawn


def run_desktop_entry(args: argparse.Namespace) -> int:
    """Write the application-menu entry and its icon (Linux), or remove both; return the exit status."""
    from desktop import platforms

    if not platforms.supports_desktop_entry(sys.platform):
        print(
            "trayproxy desktop-entry: the application-menu entry is for Linux desktops only;"
            " on Windows and macOS start TrayProxy from its folder",
            file=sys.stderr,
        )
        return 2
    if args.entry_action == "remove":
        try:
            removed = platforms.remove_desktop_entry()
        except OSError as exc:
            print(f"could not remove the application-menu entry: {exc}", file=sys.stderr)
            return 1
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print("TrayProxy has no application-menu entry: nothing to remove")
        return 0
    with tempfile.TemporaryDirectory(prefix="trayproxy-icon-") as scratch:
        try:
            written = platforms.install_desktop_entry(icon=_app_icon_file(Path(scratch)))
        except OSError as exc:
            print(f"could not write the application-menu entry: {exc}", file=sys.stderr)
            return 1
    for path in written:
        print(f"wrote {path}")
    print("TrayProxy is in the application menu (it may take a moment to appear)")
    return 0


def _uninstall_keys(path: Path) -> bool:
    """Delete the keychain entries of the config's keyring targets; False when one could not be."""
    import keyring
    from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

    from desktop.config.keys import KEYRING_SERVICE, keyring_account
    from desktop.config.parse import ConfigError
    from desktop.config.store import load_config

    if not path.exists():
        print(f"no config file at {path}: no keychain entries to remove")
        return True
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"keychain entries not removed: the config file has problems:\n{exc}", file=sys.stderr)
        return False
    accounts: dict[str, list[str]] = {}
    for spec in config.targets.values():
        if spec.key_source is not None and spec.key_source[0] == "keyring":
            accounts.setdefault(keyring_account(spec), []).append(spec.name)
    if not accounts:
        print("no target in the config file keeps its key in the OS keychain")
        return True
    ok = True
    for account, names in accounts.items():
        which = f"'{account}' (target {', '.join(names)})"
        try:
            keyring.delete_password(KEYRING_SERVICE, account)
        except PasswordDeleteError:
            print(f"no keychain entry {KEYRING_SERVICE} / {which}")
            continue
        except NoKeyringError:
            print("no OS keychain is available in this session: its entries were not removed", file=sys.stderr)
            return False
        except (KeyringError, OSError) as exc:
            # The type only: a backend's message is not ours to vouch for.
            print(f"could not remove the keychain entry {which}: {type(exc).__name__}", file=sys.stderr)
            ok = False
            continue
        print(f"removed the keychain entry {KEYRING_SERVICE} / {which}")
    return ok


def run_uninstall(args: argparse.Namespace) -> int:
    """Remove the login entry, the menu entry and, with --keys, the keychain entries; say what is kept."""
    from desktop import platforms
    from desktop.config.store import config_path
    from desktop.logs import log_dir

    ok = True
    try:
        where = platforms.remove_autostart()
        print(f"removed the login entry {where}" if where else "TrayProxy does not start at login: nothing to remove")
    except OSError as exc:
        print(f"could not remove the login entry: {exc}", file=sys.stderr)
        ok = False
    try:
        removed = platforms.remove_desktop_entry()
        for path in removed:
            print(f"removed {path}")
        if not removed and platforms.supports_desktop_entry():
            print("TrayProxy has no application-menu entry: nothing to remove")
    except OSError as exc:
        print(f"could not remove the application-menu entry: {exc}", file=sys.stderr)
        ok = False
    path = config_path(args.config)
    if args.keys:
        ok = _uninstall_keys(path) and ok
    else:
        print("keychain entries kept (add --keys to delete the keys your targets keep there)")
    print(f"kept your config file: {path}" if path.exists() else f"no config file at {path}")
    print(f"log files, if any: {log_dir()}")
    from desktop.platforms import instance

    if instance.is_running():
        print("TrayProxy is still running: choose Quit in its tray menu before you delete it", file=sys.stderr)
    return 0 if ok else 1
