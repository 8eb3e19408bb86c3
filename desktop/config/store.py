"""Where the config file lives, and reading it.

Order: ``--config PATH``, then ``TRAYPROXY_CONFIG``, then ``config.toml`` in the user's config
directory (platformdirs, app name TrayProxy: ``~/.config/TrayProxy`` on Linux,
``~/Library/Application Support/TrayProxy`` on macOS, ``%LOCALAPPDATA%\\TrayProxy`` on Windows).
On first run the file is created from :data:`DEFAULT_CONFIG`, commented defaults that work at
once. Noticing that the file changed is not done here: the running proxy watches it and reads
it again with :func:`load_config`.

Writes by the app (:func:`edit_config`, :func:`set_active_target`, :func:`set_key_source`,
:func:`set_cache_mode`) change
only what they must: the document goes through tomlkit, so comments, blank lines, key order and
quoting stay as the person wrote them. Each write

- re-checks the result with :func:`parse_config` and writes nothing if it would not parse;
- writes nothing at all when the value is already what was asked (no mtime change, no backup);
- keeps the previous contents in ``config.toml.bak`` next to the file, itself written atomically,
  except when the write takes a key written in the file out of it (``trayproxy config set-key``):
  then no backup is kept, since the point is that the key no longer sits in a plain file;
- goes to a temporary file in the same folder (``.config.toml.XXXX.tmp``), fsynced, renamed over
  the file, then the folder fsynced, so a process killed at any moment leaves the old file or the
  new one, never a mix. Readers only ever open ``config.toml``, so a temporary left by a killed
  writer is ignored; the next write removes temporaries older than a minute (desktop/atomicfile.py);
- keeps the file's permission bits (a new file is owner-only), and makes the file and its backup
  owner-only whenever they hold a key written in the file;
- does not clobber an edit saved in an editor meanwhile: if the file changed between reading and
  renaming, the change is applied again on top of the newer contents (:data:`EDIT_ATTEMPTS`).

This module must not import the engine, nor any UI.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import platformdirs
import tomlkit
import tomlkit.exceptions
import tomlkit.items

from desktop.atomicfile import mode_of, real_path, replace_durably, write_bytes_atomically, write_temporary
from desktop.config import options
from desktop.config.parse import KEY_SOURCES, ConfigError, ConfigFile, Problem, parse_config

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "backup_path",
    "config_path",
    "edit_config",
    "ensure_config",
    "load_config",
    "set_active_target",
    "set_cache_mode",
    "set_key_source",
    "write_atomically",
]

APP_NAME = "TrayProxy"
CONFIG_ENV = "TRAYPROXY_CONFIG"
CONFIG_FILE_NAME = "config.toml"
BACKUP_SUFFIX = ".bak"
# A new config file is owner-only: it may come to hold a key, and other users of the machine
# have no business reading which APIs this person uses.
NEW_FILE_MODE = 0o600
# Masks the group and other bits off: a file holding a key written in it stays owner-only.
OWNER_ONLY_MASK = 0o700
# The file changing under a write once or twice is an editor saving; changing on every attempt
# means something rewrites it in a loop, and the person should hear about it instead.
EDIT_ATTEMPTS = 3


def config_path(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``explicit``, else $TRAYPROXY_CONFIG, else the user's default."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILE_NAME


def load_config(path: Path) -> ConfigFile:
    """Read and parse ``path``; every failure, unreadable file included, is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem(1, 1, "the file does not exist")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem(1, 1, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [Problem(1, 1, f"cannot read it: {exc.strerror}")]) from None
    return parse_config(text, path=str(path))


DEFAULT_CONFIG = """\
# TrayProxy configuration. Edit freely; check it with:  trayproxy config check

# The target new requests go to: one of the [targets.*] tables below.
active = "openai"

[listen]
# Both loopback families, so tools that resolve "localhost" to ::1 reach it too.
hosts = ["127.0.0.1", "::1"]
port = 8000

[security]
# Host names (besides 127.0.0.1, localhost and [::1]) and web-page origins (besides pages
# served from this machine and editor webviews) allowed to use the proxy and its keys.
allowed_hosts = []
allowed_origins = []
# true: programs must send TrayProxy's own access token as their API key, so only those you
# give it to can use the keys below (print it with: trayproxy config token).
require_token = false

[log]
# debug, info, warning or error; access: one line per request (method, path, target, status, timings).
level = "info"
access = true

[targets.openai]
url = "https://api.openai.com"
# The key comes from OPENAI_API_KEY when it is set; otherwise your tool's own key passes.
key = { env = "OPENAI_API_KEY" }
headers = { Authorization = "Bearer {key}" }
# Recorded answers, off by default (the tray's Cache menu sets it): "record" keeps
# every answer, "replay" answers repeats from what was kept, "offline" only from it
# (Recorded answers in the README; trayproxy cache stats|clear|export|import):
# cache = "replay"

[targets.anthropic]
url = "https://api.anthropic.com"
key = { env = "ANTHROPIC_API_KEY" }
headers = { x-api-key = "{key}" }
# With the key added, a tool's own key headers (Authorization, api-key, x-goog-api-key) are
# removed, so a placeholder key a tool sends never reaches the target beside the real one.
# To let one through beside the key: keep_headers = ["authorization"]
# Also serve it on a port of its own, whatever `active` says, so an Anthropic-style tool
# (ANTHROPIC_BASE_URL=http://127.0.0.1:8001) runs next to an OpenAI-style one on port 8000:
# port = 8001
# Or route to it on the main port, whichever target is active: requests under /anthropic
# (ANTHROPIC_BASE_URL=http://127.0.0.1:8000/anthropic, sent on without /anthropic) and those
# naming a claude-* model come here (Routes in the README says more):
# prefix = "/anthropic"
# models = ["claude-*"]

[targets.ollama]
url = "http://127.0.0.1:11434"

# Azure OpenAI: uncomment, put in your resource name, and set AZURE_OPENAI_API_KEY.
# [targets.azure]
# url = "https://YOUR-RESOURCE.openai.azure.com/openai"
# key = { env = "AZURE_OPENAI_API_KEY" }
# headers = { api-key = "{key}" }
"""


def write_atomically(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new, never half.

    The text is written with the platform's line endings, as a text-mode ``open`` would. ``mode``
    defaults to the existing file's permission bits, or owner-only for a new file.
    """
    write_bytes_atomically(path, text.replace("\n", os.linesep).encode("utf-8"), mode=mode, new_mode=NEW_FILE_MODE)


def ensure_config(path: Path) -> bool:
    """Create ``path`` from the commented defaults if it does not exist; True if created."""
    if path.exists():
        return False
    write_atomically(path, DEFAULT_CONFIG)
    return True


def backup_path(path: Path) -> Path:
    """Where :func:`edit_config` keeps the previous contents of ``path``."""
    return path.with_name(path.name + BACKUP_SUFFIX)


def edit_config(path: Path, change: Callable[[tomlkit.TOMLDocument], None]) -> None:
    """Apply ``change`` to the document in ``path`` and save it, keeping everything else as is.

    ``change`` may raise (ValueError for a request that makes no sense); nothing is written then.
    A result that would not parse raises ConfigError and leaves the file untouched, as does a
    file that has mistakes already. If the file is saved by someone else meanwhile, ``change``
    runs again on the newer contents, so both their edit and ours survive.
    """
    where = str(path)
    for _ in range(EDIT_ATTEMPTS):
        before = _read_for_edit(path)
        old_text = before.decode("utf-8")
        old_config = parse_config(old_text, path=where)
        new_text = _apply(old_text, change, where)
        if new_text == old_text:
            return
        new_config = parse_config(new_text, path=where)
        try:
            if _save(path, before, old_config, new_text.encode("utf-8"), new_config):
                return
        except OSError as exc:
            raise ConfigError(where, [Problem(1, 1, f"cannot save it: {exc.strerror}")]) from None
    raise ConfigError(
        where,
        [Problem(1, 1, "the file kept changing while TrayProxy was saving it; nothing was saved, try again")],
    )


def set_active_target(path: Path, name: str) -> None:
    """Make ``name`` the active target in ``path``; ValueError if there is no such target."""

    def change(doc: tomlkit.TOMLDocument) -> None:
        _find_target(doc, name, path)
        if doc.get("active") != name:
            _set_keeping_quotes(doc, "active", name)

    edit_config(path, change)


def set_cache_mode(path: Path, target: str, mode: str) -> None:
    """Set ``cache = "MODE"`` of ``[targets.TARGET]``: the line keeps its place and trailing
    comment; a target without one gets it after its ``url`` (none is written for "off" then,
    which is what no line means). ValueError if the target does not exist or ``mode`` is not
    a cache mode."""
    if mode not in options.CACHE_MODE.choices:
        raise ValueError(f"a cache mode is one of {', '.join(options.CACHE_MODE.choices)}, not {mode!r}")
    key = options.CACHE_MODE.key

    def change(doc: tomlkit.TOMLDocument) -> None:
        table = _find_target(doc, target, path)
        current = table.get(key, options.CACHE_MODE.default)
        if isinstance(current, str) and current.lower() == mode:
            return
        if key in table or not _add_line_after_url(table, f'{key} = "{mode}"'):
            _set_keeping_quotes(table, key, mode)

    edit_config(path, change)


def set_key_source(path: Path, target: str, source: dict[str, str | bool]) -> None:
    """Set ``key = { ... }`` of ``[targets.TARGET]`` to ``source``, e.g. ``{"keyring": True}``.

    The line keeps its place and trailing comment; a target without a key gets the line after
    its ``url``. ValueError if the target does not exist or ``source`` is not one key source.
    """
    if len(source) != 1 or next(iter(source)) not in KEY_SOURCES:
        raise ValueError(f"a key source is one of {', '.join(KEY_SOURCES)}, e.g. {{'keyring': True}}")

    def change(doc: tomlkit.TOMLDocument) -> None:
        table = _find_target(doc, target, path)
        current = table.get("key")
        if isinstance(current, Mapping) and dict(current) == source:
            return
        if "key" in table or not _add_line_after_url(table, f"key = {_inline_table_text(source)}"):
            table["key"] = _inline_table(source)

    edit_config(path, change)


def _read_for_edit(path: Path) -> bytes:
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(where, [Problem(1, 1, "the file does not exist")]) from None
    except OSError as exc:
        raise ConfigError(where, [Problem(1, 1, f"cannot read it: {exc.strerror}")]) from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, [Problem(1, 1, f"not UTF-8 text ({exc.reason})")]) from None
    return data


def _apply(text: str, change: Callable[[tomlkit.TOMLDocument], None], where: str) -> str:
    """Run ``change`` on the tomlkit document of ``text``; the result in the file's own style."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        # tomllib accepted the text (parse_config ran first), so this is tomlkit's limitation.
        raise ConfigError(
            where, [Problem(exc.line, exc.col, "TrayProxy cannot edit this file: edit it by hand")]
        ) from None
    change(doc)
    new_text = doc.as_string()
    if new_text == text:
        return text
    if "\n" in text and text.count("\n") == text.count("\r\n"):
        # A file with Windows line endings throughout keeps them on the lines tomlkit adds.
        new_text = re.sub(r"(?<!\r)\n", "\r\n", new_text)
    if text.endswith("\n") and not new_text.endswith("\n"):
        new_text += "\r\n" if text.endswith("\r\n") else "\n"
    return new_text


def _save(path: Path, before: bytes, old: ConfigFile, after: bytes, new: ConfigFile) -> bool:
    """Back up ``before`` and put ``after`` in place, unless the file no longer holds ``before``
    (False: someone saved it meanwhile; nothing was replaced)."""
    target = real_path(path)
    base_mode = mode_of(target, NEW_FILE_MODE)
    removed_keys = _in_file_keys(old) - _in_file_keys(new)
    temporary = write_temporary(target, after, _mode_for(new, base_mode))
    try:
        if _current_bytes(target) != before:
            return False
        backup = backup_path(path)
        if removed_keys:
            # The change took a key out of the file; a backup would keep it in plain text.
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
        else:
            write_bytes_atomically(backup, before, mode=_mode_for(old, base_mode))
            # Checked again: the backup took a few fsyncs, time enough for an editor to save.
            if _current_bytes(target) != before:
                return False
        # A save landing between this check and the rename is lost; no editor takes part in
        # a lock, so the window is only made as short as it can be.
        replace_durably(temporary, target)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _current_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _in_file_keys(config: ConfigFile) -> set[str]:
    return {
        str(spec.key_source[1])
        for spec in config.targets.values()
        if spec.key_source is not None and spec.key_source[0] == "value"
    }


def _mode_for(config: ConfigFile, base_mode: int) -> int:
    return base_mode & OWNER_ONLY_MASK if _in_file_keys(config) else base_mode


def _find_target(doc: tomlkit.TOMLDocument, name: str, path: Path) -> Any:
    targets = doc.get("targets")
    names = list(targets) if isinstance(targets, Mapping) else []
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"targets: {', '.join(names) or 'none'}"
        raise ValueError(f"there is no target '{name}' in {path} ({hint})")
    return targets[name]  # type: ignore[index]


def _set_keeping_quotes(table: Any, key: str, value: str) -> None:
    """Set a string, written 'literal' if the old one was and the new one can be."""
    current = table.item(key) if key in table else None
    written = current.as_string() if isinstance(current, tomlkit.items.String) else ""
    literal = (
        # String.type is tomlkit 0.13+; the text says the same on every version.
        written.startswith("'")
        and not written.startswith("'''")
        and "'" not in value
        and value.isprintable()
    )
    table[key] = tomlkit.string(value, literal=literal)


def _inline_table(source: Mapping[str, str | bool]) -> Any:
    """``{ kind = value }`` spaced as people write it (tomlkit's own has no inner spaces)."""
    return tomlkit.parse(f"key = {_inline_table_text(source)}\n")["key"]


def _inline_table_text(source: Mapping[str, str | bool]) -> str:
    body = ", ".join(
        f"{tomlkit.key(k).as_string()} = {tomlkit.item(v).as_string()}" for k, v in source.items()
    )
    return f"{{ {body} }}"


def _add_line_after_url(table: Any, line: str) -> bool:
    """Write ``line`` right under the ``url`` line of a ``[targets.NAME]`` table, indented as
    it is; False (nothing done) if the table has no such line of its own.

    Added the usual way (``table[key] = ...``) the line would land after the comments that lead
    into the next section, which tomlkit counts as this table's. tomlkit offers no public
    "insert at" (python-poetry/tomlkit#7; the private one we used is gone in 0.15), so the line
    is written as part of the url line's ending (``Trivia.trail``, public in 0.12 .. 0.15): the
    document's text is right, while ``table`` itself does not list the new key. Callers only
    render the document; ``parse_config`` reads the result again before it is saved.
    """
    if not isinstance(table, tomlkit.items.Table) or table.is_super_table() or "url" not in table:
        # Dotted keys (targets.x.url = ...) or split tables: tomlkit's own placement is right.
        return False
    url = table.value.item("url")
    if not isinstance(url, tomlkit.items.Item):
        return False
    trail = url.trivia.trail
    newline = "\r\n" if trail.endswith("\r\n") else "\n"
    if trail.endswith("\n"):
        url.trivia.trail = f"{trail}{url.trivia.indent}{line}{newline}"
    else:
        # The url is the file's last line, without a line break.
        url.trivia.trail = f"{trail}{newline}{url.trivia.indent}{line}"
    return True
