"""Key sources: where a target's key comes from, read when the target is put to use.

Resolved values become :class:`Secret` at once and are never formatted into text. Sources:

- ``{ env = "NAME" }``: an environment variable. Apps started at login or by double-click do
  not see variables set in a shell profile, so an empty one is reported by name.
- ``{ keyring = true }``: the OS keychain (macOS Keychain, Windows Credential Locker, the
  Secret Service on Linux) through ``keyring``; entry "TrayProxy" / the target's name, or
  ``{ keyring = "account" }``. ``trayproxy config set-key NAME`` stores it there.
- ``{ command = "..." }``: a shell command whose first non-empty output line is the key, for
  short-lived tokens from a company SSO or a password manager; re-run when the target answers
  401 (the controller asks, see ``key_refreshes``).
- ``key = "..."``: the key in the file itself; discouraged, and the file is kept owner-only.

A key that cannot be read is not always fatal: headers that use ``{key}`` are left out, so the
client's own credentials pass through. It is an error only when they cannot: the target strips
the very header ``{key}`` fills (:func:`needs_key`).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from desktop.clients import PLACEHOLDER_KEY
from desktop.config.model import LOCAL_TOKEN_PREFIX, Secret, Target, control_character
from desktop.config.parse import ConfigFile, TargetSpec
from desktop.redaction import (
    MASK,
    MIN_SECRET_LEN,
    SENSITIVE_HEADERS,
    looks_like_key,
    mask_token_like,
    redact_text,
)

__all__ = [
    "KEYRING_SERVICE",
    "KeyUnavailable",
    "ResolvedTarget",
    "key_refreshes",
    "keyring_account",
    "needs_key",
    "protect_in_file_keys",
    "resolve_key",
    "resolve_target",
    "store_key",
    "why_no_key",
]

KEY_PLACEHOLDER = "{key}"
# The keychain entry's service name; the account is the target's name.
KEYRING_SERVICE = "TrayProxy"
# A key command may open a browser for a company SSO and wait for the person.
KEY_COMMAND_TIMEOUT_S = 120.0
# Enough of a failing command's stderr to say why, not a page of it.
COMMAND_ERROR_CHARS = 200


class KeyUnavailable(Exception):
    """The key could not be read; the message says why without showing any part of it."""


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A target ready for the engine, and what went wrong reading its key, if anything."""

    target: Target
    # Why the key could not be read; None when it was (or the target has no key source).
    problem: str | None = None
    # True when the problem makes the target unusable (see needs_key).
    fatal: bool = False
    # The key source's own reason, without the target's name or what follows from it.
    key_error: str | None = None


def keyring_account(spec: TargetSpec) -> str:
    """The keychain account the target's key is kept under: a ``keyring`` source's own name,
    else the target's name."""
    value = spec.key_source[1] if spec.key_source and spec.key_source[0] == "keyring" else None
    return value if isinstance(value, str) else spec.name


def needs_key(spec: TargetSpec) -> bool:
    """True when requests cannot authenticate without the key: the target strips the header
    its ``{key}`` would fill, so the client's own credentials cannot pass either."""
    return any(
        KEY_PLACEHOLDER in template and name.lower() in spec.strip_headers for name, template in spec.headers
    )


def key_refreshes(spec: TargetSpec) -> bool:
    """True when asking the source again may give a new key (a command's short-lived token)."""
    return spec.key_source is not None and spec.key_source[0] == "command"


def resolve_key(spec: TargetSpec, environ: Mapping[str, str] = os.environ) -> str | None:
    """The target's key, None when it has no key source; raise KeyUnavailable when unreadable."""
    if spec.key_source is None:
        return None
    kind, value = spec.key_source
    if kind == "env":
        found = environ.get(str(value), "")
        if not found and looks_like_key(str(value)):
            # A key pasted where its variable's name belongs: saying "the variable <key> is not
            # set" would print it in every warning, status line and notification.
            raise KeyUnavailable(
                "the value of `env` looks like a key, not a variable name (not shown here);"
                ' write the name of the variable that holds the key, e.g. key = { env = "OPENAI_API_KEY" },'
                " and keep the key itself out of the file"
            )
        if not found:
            raise KeyUnavailable(
                f"the environment variable {value} is not set or empty"
                " (apps started at login or from a menu do not see variables set in a shell profile;"
                f" {_elsewhere_advice(spec.name)})"
            )
        what = _stand_in(_one_line(found))
        if what:
            # `eval "$(trayproxy env)"` or pasted Copy environment lines, then TrayProxy started
            # from that shell: sent as the key, the stand-in gets a 401 from the real service.
            keychain = (
                f", or keep the key in the OS keychain: trayproxy config set-key {spec.name}"
                if _keyring_backend_problem() is None
                else ""
            )
            raise KeyUnavailable(
                f"{value} holds {what} (set by `trayproxy env` / Copy environment), not your key:"
                f" those lines are for your tools; start TrayProxy where {value} is your real key"
                f" (another shell, or export {value}=<your key> first){keychain}"
            )
        return found
    if kind == "value":
        found = str(value)
    elif kind == "keyring":
        found = _read_keyring(keyring_account(spec), spec.name)
    elif kind == "command":
        found = _run_key_command(str(value), environ)
    else:
        raise KeyUnavailable(f"unknown key source '{kind}'")  # parse.py lets no other through
    what = _stand_in(found)
    if what:
        raise KeyUnavailable(f"the key is {what}, not your key: put your real key there")
    return _one_line(found)


def _one_line(key: str) -> str:
    """``key`` when a header can carry it: one with a line break (a pasted key with its
    newline) made every request fail with 500, and the engine's Target now refuses it."""
    char = control_character(key)
    if char:
        raise KeyUnavailable(f"the key holds {char}, which a header cannot carry (the key is not shown); remove it")
    return key


def _stand_in(key: str) -> str | None:
    """What TrayProxy hands tools in place of a key, when ``key`` is one of those: never a
    key to send on, to any target."""
    if key == PLACEHOLDER_KEY:
        return "TrayProxy's placeholder"
    if key.startswith(LOCAL_TOKEN_PREFIX):
        return "TrayProxy's local access token"
    return None


def _keyring_backend_problem() -> str | None:
    """Why the OS keychain cannot be used here, or None when it can."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception as exc:  # keyring's backends import OS bindings that may be broken
        return f"the OS keychain cannot be loaded ({type(exc).__name__})"
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        if sys.platform.startswith("linux"):
            return (
                "no OS keychain is available in this session (the Secret Service, e.g. gnome-keyring"
                " or KeePassXC, is not running on the session bus)"
            )
        return "no OS keychain is available"
    return None


def _elsewhere_advice(target_name: str) -> str:
    """Where else to keep a key: the keychain when there is one; without one (set-key would
    refuse), a command printing it, or the variable set where TrayProxy itself starts."""
    if _keyring_backend_problem() is None:
        return f"run 'trayproxy config set-key {target_name}' to keep the key in the OS keychain"
    return (
        "no OS keychain is available here, so use key = { command = \"...\" } (a command printing"
        " the key, e.g. a password manager's CLI) or set the variable where TrayProxy starts"
    )


def _read_keyring(account: str, target_name: str) -> str:
    problem = _keyring_backend_problem()
    if problem:
        raise KeyUnavailable(f"{problem}; use key = {{ env = \"NAME\" }} or {{ command = \"...\" }} instead")
    import keyring
    from keyring.errors import KeyringError

    try:
        found = keyring.get_password(KEYRING_SERVICE, account)
    except KeyringError as exc:
        raise KeyUnavailable(f"the OS keychain refused to give the key ({type(exc).__name__})") from None
    except Exception as exc:  # a D-Bus or OS error from the backend: say which, never its text
        raise KeyUnavailable(f"the OS keychain failed ({type(exc).__name__})") from None
    if not found:
        raise KeyUnavailable(
            f"no key stored in the OS keychain under '{account}'; run: trayproxy config set-key {target_name}"
        )
    return found


def store_key(account: str, key: str) -> None:
    """Put ``key`` in the OS keychain under ``account``; raise KeyUnavailable if it cannot."""
    problem = _keyring_backend_problem()
    if problem:
        raise KeyUnavailable(problem)
    import keyring

    try:
        keyring.set_password(KEYRING_SERVICE, account, key)
    except Exception as exc:  # never the exception's text: it may quote what was stored
        raise KeyUnavailable(f"the OS keychain did not store the key ({type(exc).__name__})") from None


def _run_key_command(command: str, environ: Mapping[str, str]) -> str:
    # Through the shell, like git's credential helpers, so pipes and ~ work as people write them.
    try:
        result = subprocess.run(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=KEY_COMMAND_TIMEOUT_S,
            env=dict(environ),
        )
    except subprocess.TimeoutExpired:
        raise KeyUnavailable(f"the key command did not finish within {KEY_COMMAND_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise KeyUnavailable(f"the key command could not be started: {exc.strerror}") from None
    if result.returncode != 0:
        why = _last_line(result.stderr, printed=result.stdout)
        raise KeyUnavailable(
            f"the key command exited with status {result.returncode}" + (f": {why}" if why else "")
        )
    for line in result.stdout.splitlines():
        if line.strip():
            return line.strip()
    raise KeyUnavailable("the key command printed nothing")


def _last_line(text: str, *, printed: str = "") -> str:
    """The last non-empty line of a failing key command's stderr, for the person to read, with
    key shapes and token-like runs masked, and what it ``printed`` on stdout as the key (its
    first non-empty line, as a succeeding command's would be taken, and each word of it) too:
    a helper may quote it in its complaint, however plain it looks ("correct-horse-...")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    meant = next((line.strip() for line in printed.splitlines() if line.strip()), "")
    for value in sorted({meant, *meant.split()}, key=len, reverse=True):
        if len(value) >= MIN_SECRET_LEN:
            last = last.replace(value, MASK)
    return mask_token_like(redact_text(last))[:COMMAND_ERROR_CHARS]


def resolve_target(spec: TargetSpec, environ: Mapping[str, str] = os.environ) -> ResolvedTarget:
    """The engine's Target for ``spec`` and, when its key could not be read, why."""
    problem = None
    key_error = None
    try:
        key = resolve_key(spec, environ)
    except KeyUnavailable as exc:
        key = None
        key_error = str(exc)
        fatal = needs_key(spec)
        consequence = (
            "requests to it cannot authenticate"
            if fatal
            else "requests carry the client's own credentials"
        )
        problem = f"target '{spec.name}': {exc}; {consequence}"
    headers: list[tuple[str, Secret]] = []
    for name, template in spec.headers:
        if KEY_PLACEHOLDER in template:
            if key is None:
                continue
            template = template.replace(KEY_PLACEHOLDER, key)
        headers.append((name, Secret(template)))
    # Field by field rather than through dataclasses.fields: mypy then checks each type;
    # tests/config/test_keys.py (..._shares_with_the_engine_reaches_it) catches one left out.
    target = Target(
        url=spec.url,
        name=spec.name,
        add_headers=tuple(headers),
        strip_headers=spec.strip_headers,
        keep_headers=spec.keep_headers,
        connect_timeout_s=spec.connect_timeout_s,
        read_timeout_s=spec.read_timeout_s,
        verify_tls=spec.verify_tls,
        ca_bundle=spec.ca_bundle,
        keep_host=spec.keep_host,
        proxy=spec.proxy,
        cache=spec.cache,
    )
    return ResolvedTarget(target, problem, fatal=problem is not None and needs_key(spec), key_error=key_error)


def why_no_key(spec: TargetSpec, resolved: ResolvedTarget) -> str | None:
    """Why requests to ``spec`` get no key from TrayProxy, or None when they get one: a header
    filled from ``{key}``, or a credential header written out in the file."""
    uses_key = any(KEY_PLACEHOLDER in template for _, template in spec.headers)
    if uses_key and resolved.key_error is None:
        return None
    if any(name.lower() in SENSITIVE_HEADERS and KEY_PLACEHOLDER not in value for name, value in spec.headers):
        return None
    if uses_key and resolved.key_error:
        return resolved.key_error
    if spec.key_source is not None:
        return 'no header uses {key}; add one, e.g. headers = { Authorization = "Bearer {key}" }'
    return f"target '{spec.name}' has no key (fine for a server that needs none, such as a local Ollama)"


def protect_in_file_keys(path: Path, config: ConfigFile) -> str | None:
    """Make ``path`` owner-only when it holds a key itself; say so (once) when it changed."""
    holders = [spec.name for spec in config.targets.values() if spec.key_source and spec.key_source[0] == "value"]
    if not holders or sys.platform == "win32":  # Windows profiles are per-user already
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & 0o077:
            return None
        os.chmod(path, mode & 0o700)
    except OSError as exc:
        return f"{path} holds the key of {', '.join(holders)} but its permissions could not be narrowed: {exc.strerror}"
    safer = (
        f"a keychain entry is safer: trayproxy config set-key {holders[0]}"
        if _keyring_backend_problem() is None
        else 'key = { command = "..." } or { env = "NAME" } keeps it out of the file'
    )
    return f"{path} holds the key of {', '.join(holders)} in the file itself; made it readable by you only ({safer})"
