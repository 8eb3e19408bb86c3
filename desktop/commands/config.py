"""``trayproxy config path|show|test|edit|check|set-key|token``: find, show, check and fill in
the config file.

Run by ``desktop.cli`` (which holds the parser and the help) for the ``config`` command only.
What each action needs is imported inside it, so ``config path`` loads neither the engine nor
a keychain; nothing here imports the tray.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desktop.config.parse import ConfigFile

__all__ = ["run_config"]


def run_config(args: argparse.Namespace) -> int:
    """Run the ``config`` action ``args`` names; return the exit status."""
    from desktop.config.store import config_path

    path = config_path(args.config)
    if args.config_command == "path":
        print(path)
        return 0
    if args.config_command in ("check", "show", "test", "set-key") and not path.exists():
        print(
            f"{path}: the file does not exist yet; run 'trayproxy serve' once, or 'trayproxy config edit',"
            " to create it with the default targets",
            file=sys.stderr,
        )
        return 1
    if args.config_command == "edit":
        return _edit_then_check(path)
    if args.config_command == "test":
        return _test_target(args, path)
    if args.config_command == "set-key":
        return _set_key(args, path)
    if args.config_command == "check":
        return _check_file(path)
    if args.config_command == "token":
        return _print_token(args, path)
    if args.config_command == "show":
        return _show_masked(path)
    raise AssertionError(f"unhandled config action {args.config_command}")  # argparse lists them all


def _show_masked(path: Path) -> int:
    """Print the file with every key masked; a file that is not TOML is not printed."""
    from desktop.config.parse import ConfigError
    from desktop.config.show import show_redacted

    try:
        print(show_redacted(path.read_text(encoding="utf-8"), path=str(path)), end="")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read it: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _test_target(args: argparse.Namespace, path: Path) -> int:
    """Send the model-list request to the named (or active) target; 1 when it failed."""
    import asyncio

    from desktop.config.keys import resolve_target, why_no_key
    from desktop.config.parse import ConfigError
    from desktop.config.store import load_config
    from desktop.engine.probe import probe_target

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    names = [args.target] if args.target else [config.active]
    if args.target not in (None, *config.targets):
        print(
            f"no target named '{args.target}' in {path} (targets: {', '.join(config.targets)})",
            file=sys.stderr,
        )
        return 2
    worst = 0
    for name in names:
        spec = config.targets[name]
        resolved = resolve_target(spec)
        if resolved.fatal:
            print(f"error: {resolved.problem}", file=sys.stderr)
        # A key that could not be read is the "no key sent" reason on the result line.
        result = asyncio.run(probe_target(resolved.target, no_key=why_no_key(spec, resolved)))
        print(result.line(name))
        worst = worst if result.ok else 1
    return worst


def _edit_then_check(path: Path) -> int:
    """Open the file (made first if missing) in $VISUAL / $EDITOR, then parse what was saved."""
    import shlex
    import subprocess

    from desktop.config.parse import ConfigError
    from desktop.config.store import ensure_config, load_config

    ensure_config(path)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        # Not the OS's default app: its opener returns at once, before the file is saved, so
        # the check after the editor would check the file as it was.
        print(f"set $EDITOR to edit it here, or open {path} in any text editor", file=sys.stderr)
        return 2
    status = subprocess.call([*shlex.split(editor), str(path)])
    if status != 0:
        print(f"the editor exited with status {status}", file=sys.stderr)
        return 1
    try:
        load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def _check_file(path: Path) -> int:
    """Parse the file and try every key source; print each problem as path:line:col."""
    from desktop.config.cabundle import target_ca_bundle_problem
    from desktop.config.keys import protect_in_file_keys, resolve_target
    from desktop.config.localtoken import brings_own_key
    from desktop.config.parse import ConfigError
    from desktop.config.store import load_config
    from desktop.engine.guard import unmarked_host_warnings

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    notice = protect_in_file_keys(path, config)
    if notice:
        print(f"{path}: note: {notice}", file=sys.stderr)
    errors = 0
    for spec in config.targets.values():
        resolved = resolve_target(spec)
        if resolved.problem:
            line, col = spec.key_position
            level = "error" if resolved.fatal else "warning"
            print(f"{path}:{line}:{col}: {level}: {resolved.problem}", file=sys.stderr)
            errors += resolved.fatal
        ca_problem = target_ca_bundle_problem(resolved.target)
        if ca_problem:
            line, col = spec.ca_bundle_position
            print(f"{path}:{line}:{col}: {ca_problem}", file=sys.stderr)
            errors += 1
        if config.settings.require_token and not brings_own_key(spec, resolved.target):
            print(
                f"{path}: warning: target '{spec.name}' adds no key of its own: with require_token"
                " its requests carry no credential (the client's holds the local token);"
                " fine for a server that needs none, such as a local Ollama",
                file=sys.stderr,
            )
    for warning in _fallback_api_warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    settings = config.settings
    for warning in unmarked_host_warnings(settings.allowed_hosts, require_token=settings.require_token):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: OK, {len(config.targets)} target(s), active: {config.active}")
    return 0


def _print_token(args: argparse.Namespace, path: Path) -> int:
    """Print the local access token (made on first use); the person's own secret, asked for."""
    from desktop.config.localtoken import LocalTokenError, ensure_token, rotate_token, token_path
    from desktop.config.parse import ConfigError
    from desktop.config.store import load_config

    file = token_path(path)
    try:
        token = rotate_token(file) if args.rotate else ensure_token(file)
    except (OSError, LocalTokenError) as exc:
        print(f"could not {'write' if args.rotate else 'read'} the local access token: {exc}", file=sys.stderr)
        return 1
    print(token)
    if args.rotate:
        print(
            "made a new token; the previous one no longer works (a running TrayProxy follows within seconds)",
            file=sys.stderr,
        )
    try:
        required = load_config(path).settings.require_token
    except ConfigError:
        required = True  # nothing to add: `config check` tells what is wrong with the file
    if not required:
        print(
            f"note: require_token is off in {path} ([security]): TrayProxy does not ask for this token yet",
            file=sys.stderr,
        )
    return 0


def _read_new_key(target: str) -> str:
    """The key typed by the person (no echo) or piped in; surrounding whitespace dropped."""
    import getpass

    if sys.stdin.isatty():
        return getpass.getpass(f"Key for {target} (input hidden): ").strip()
    return sys.stdin.readline().strip()


def _set_key(args: argparse.Namespace, path: Path) -> int:
    """Store a typed or piped key in the OS keychain and point the target's key at it."""
    from desktop.config.keys import KeyUnavailable, keyring_account, store_key
    from desktop.config.parse import ConfigError
    from desktop.config.store import load_config, set_key_source

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    spec = config.targets.get(args.target)
    if spec is None:
        print(f"no target named '{args.target}' in {path} (targets: {', '.join(config.targets)})", file=sys.stderr)
        return 2
    key = _read_new_key(args.target)
    if not key:
        print("no key given; nothing stored", file=sys.stderr)
        return 2
    if any(c.isspace() for c in key):
        print("the key contains spaces or line breaks; nothing stored", file=sys.stderr)
        return 2
    uses_keyring = spec.key_source is not None and spec.key_source[0] == "keyring"
    account = keyring_account(spec) if uses_keyring else spec.name
    try:
        store_key(account, key)
    except KeyUnavailable as exc:
        print(
            f"could not store the key: {exc}.\nKeep it out of the keychain instead, in the target's table:"
            ' key = { env = "NAME" } (a variable set where TrayProxy starts) or'
            ' key = { command = "..." } (a command printing it, e.g. a password manager\'s CLI)',
            file=sys.stderr,
        )
        return 1
    print(f"stored the key for '{args.target}' in the OS keychain")
    if not uses_keyring:
        set_key_source(path, args.target, {"keyring": True})
        print(f"{path}: target '{args.target}' now reads its key from the keychain")
    if not any("{key}" in template for _, template in spec.headers):
        print(
            f"note: target '{args.target}' has no header using {{key}}; add one, e.g."
            ' headers = { Authorization = "Bearer {key}" }',
            file=sys.stderr,
        )
    return 0



def _fallback_api_warnings(config: ConfigFile) -> list[str]:
    """A warning for each fallback whose key goes in other credential headers than its
    target's (Authorization where the target takes x-api-key): most likely another API, which
    failover never translates to, so the tool would get that API's 404 for a retryable 529.
    Not an error: a gateway may take either."""
    from desktop.redaction import CREDENTIAL_HEADERS

    def key_headers(headers: tuple[tuple[str, str], ...]) -> frozenset[str]:
        return frozenset(header.lower() for header, _ in headers) & CREDENTIAL_HEADERS

    def spelled(headers: frozenset[str]) -> str:
        return " or ".join(sorted("Authorization" if header == "authorization" else header for header in headers))

    warnings = []
    for name, spec in config.targets.items():
        own = key_headers(spec.headers)
        for fallback in spec.fallbacks:
            other = config.targets.get(fallback)
            theirs = key_headers(other.headers) if other is not None else frozenset()
            if own and theirs and not own & theirs:
                warnings.append(
                    f"target '{name}' falls back to '{fallback}', which takes its key in {spelled(theirs)},"
                    f" not {spelled(own)}: requests are never translated between APIs, so make sure"
                    f" '{fallback}' speaks the same one"
                )
    return warnings
