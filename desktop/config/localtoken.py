"""The local access token's file: made on first need, owner-only, stable until rotated.

With ``[security] require_token = true`` clients must send this token as their API key (the
engine's ``localtoken.py`` checks it). It lives in ``local-token`` next to the config file (so
``--config`` and ``TRAYPROXY_CONFIG`` each get their own), one line, readable by its owner only,
and is made the first time something needs it: the proxy starting with the setting on, or
``trayproxy config token``. It stays the same across restarts until ``trayproxy config token
--rotate`` writes a new one; a running proxy notices the file change and asks for the new token
from then on.

The token is the person's own local secret, printed on request (``config token``, the tray's
Copy environment); it is never logged: log lines go through the redactor, which masks the
``tp-local-`` shape and every registered value.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from pathlib import Path

from desktop.config.keys import KEY_PLACEHOLDER
from desktop.config.model import LOCAL_TOKEN_PREFIX, Target
from desktop.config.parse import TargetSpec
from desktop.config.store import write_atomically
from desktop.redaction import CREDENTIAL_HEADERS

__all__ = [
    "TOKEN_FILE_NAME",
    "LocalTokenError",
    "brings_own_key",
    "ensure_token",
    "generate_token",
    "load_token",
    "read_token",
    "rotate_token",
    "token_path",
]

log = logging.getLogger("trayproxy.config")

TOKEN_FILE_NAME = "local-token"
# 32 random bytes (256 bits), as secrets.token_urlsafe recommends for tokens that guard things.
TOKEN_BYTES = 32
# Only the person's account may read it: it unlocks the keys the proxy adds.
TOKEN_FILE_MODE = 0o600
# What a token written by hand may look like: the URL-safe alphabet our tokens use (and dots),
# so it fits in an Authorization header and a shell's environment line unquoted; long enough
# not to be guessed.
_VALID_TOKEN = re.compile(r"[A-Za-z0-9._-]{16,512}")


class LocalTokenError(Exception):
    """The token file exists but cannot be used; the message says why and what to run."""


def token_path(config_file: Path) -> Path:
    """Where the token for the config at ``config_file`` is kept: next to it."""
    return config_file.parent / TOKEN_FILE_NAME


def generate_token() -> str:
    """A fresh token: the recognisable prefix and 256 random bits, URL-safe."""
    return LOCAL_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def load_token(path: Path) -> str | None:
    """The token in ``path``, None when there is no file yet; raise LocalTokenError (or
    OSError) when it cannot be used. Only reads (a running proxy's plan is made with it)."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise LocalTokenError(f"{path} is not a token; run: trayproxy config token --rotate") from None
    token = text.strip()
    if not token:
        return None
    if not _VALID_TOKEN.fullmatch(token):
        raise LocalTokenError(
            f"{path} does not hold a usable token (16 to 512 letters, digits, dots, dashes or underscores);"
            " run: trayproxy config token --rotate"
        )
    return token


def read_token(path: Path) -> str | None:
    """:func:`load_token`, with a file others may read made owner-only first."""
    token = load_token(path)
    if token is not None:
        _make_owner_only(path)
    return token


def _make_owner_only(path: Path) -> None:
    if os.name != "posix":
        return  # Windows: the user's profile folder is theirs alone already
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, TOKEN_FILE_MODE)
        log.warning("%s could be read by other users; made it readable by you only", path)


def ensure_token(path: Path) -> str:
    """The token in ``path``, made first if there is none (owner-only, written atomically)."""
    token = read_token(path)
    if token is not None:
        return token
    write_atomically(path, generate_token() + "\n", mode=TOKEN_FILE_MODE)
    log.info("made a local access token in %s", path)
    # Read back: if another TrayProxy made one at the same moment, the file's is the one.
    token = read_token(path)
    if token is None:  # pragma: no cover - emptied between our write and read
        raise LocalTokenError(f"{path} was emptied while it was being made")
    return token


def rotate_token(path: Path) -> str:
    """Replace the token in ``path`` with a fresh one and return it; the old one stops
    working as soon as a running proxy sees the file change."""
    token = generate_token()
    write_atomically(path, token + "\n", mode=TOKEN_FILE_MODE)
    log.info("made a new local access token in %s", path)
    return token


def brings_own_key(spec: TargetSpec, target: Target) -> bool:
    """True when the proxy adds a credential of the target's own: a ``{key}`` header whose key
    was read, or a credential header written out in full. Without one, and with the token
    required, the target's requests carry no credential (the client's holds the token)."""
    added = {name.lower() for name, _ in target.add_headers}
    return any(
        name.lower() in added and (KEY_PLACEHOLDER in template or name.lower() in CREDENTIAL_HEADERS)
        for name, template in spec.headers
    )
