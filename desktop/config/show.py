"""The config file's text for ``trayproxy config show``: every secret masked, the rest as written.

Masking works on the parsed document, not on lines: tomlkit keeps every byte it is not asked
to change, so a key is found however it is spelt (a quoted key name, a multi-line or literal
string, an inline table under ``[targets]``, dotted keys, a table of its own). Masked:

- a target's ``key`` written in the file, in any form; of a key source, ``env`` and
  ``keyring`` are shown (they name where the key is) unless what they hold looks like a key
  (redaction.looks_like_key), ``command`` with its token-like runs masked, anything else masked;
- every value of a target's ``headers``, but placeholders (``"Bearer {key}"``,
  ``"{env:NAME}"``), values too short to be a key, and those of headers that carry none
  (:data:`PLAIN_HEADERS`);
- every string under a setting named for a credential (redaction.is_credential_name: key, token,
  secret, password, signature...), wherever it is and whatever it holds;
- URLs (``url``, ``proxy``) as redaction.redact_url shows them;
- a commented-out setting (``# key = "..."``) as if it were not commented out;

and the whole text then goes through redact_text, for key shapes anywhere (comments too).
A text that does not parse is not shown: nothing could say where its keys are. A file with
routes gets comment lines after it saying where requests go (:func:`routes_summary`), each
target's claims in the order they are tried, so a bug report says it without a reader
working it out.

This module must not import the engine, nor any UI; it masks through ``desktop.redaction``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items

from desktop.config import options
from desktop.config.parse import ConfigError, ConfigFile, Problem, parse_config
from desktop.redaction import (
    MASK,
    MIN_SECRET_LEN,
    is_credential_name,
    is_placeholder,
    looks_like_key,
    mask_token_like,
    redact_text,
    redact_url,
)

__all__ = ["PLAIN_HEADERS", "routes_summary", "show_redacted"]

# Lower-case names of headers whose values are versions, feature flags or descriptions, never
# credentials: shown, as a bug report needs them.
PLAIN_HEADERS = frozenset(
    {
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "accept",
        "content-type",
        "user-agent",
        "http-referer",
        "x-title",
    }
)
# Settings holding a URL, which may carry a password or a key in its path.
_URL_SETTINGS = frozenset(setting.key for setting in (options.URL, options.PROXY, options.TARGET_PROXY))


def show_redacted(text: str, *, path: str = "config.toml") -> str:
    """``text`` with every secret masked (see the module docstring); ConfigError if it is not TOML."""
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            path,
            [
                Problem(
                    exc.line,
                    exc.col,
                    "not valid TOML, so nothing is shown (where its keys are cannot be told);"
                    " 'trayproxy config check' says what to fix",
                )
            ],
        ) from None
    has_routes = _has_routes(document)
    _mask_table(document, ())
    shown = document.as_string()
    try:
        summary = routes_summary(parse_config(text, path=path))
    except ConfigError:
        # The routes cannot be told from a file with mistakes; say so rather than end silently.
        summary = (
            "# Where requests go is not shown: this file has mistakes ('trayproxy config check' lists them).\n"
            if has_routes
            else ""
        )
    if summary:
        shown = shown + ("\n" if shown.endswith("\n") else "\n\n") + summary
    return redact_text(shown)


def _has_routes(document: Mapping[str, Any]) -> bool:
    """Whether some target's table in ``document`` writes a route or a fallback."""
    targets = document.get("targets")
    if not isinstance(targets, Mapping):
        return False
    keys = {options.PREFIX.key, options.MODELS.key, options.MODEL_MAP.key, options.FALLBACKS.key}
    return any(isinstance(table, Mapping) and keys & set(table) for table in targets.values())


def routes_summary(config: ConfigFile) -> str:
    """Comment lines saying where the routes of ``config`` send requests, in the order they
    are tried (the route table's: prefixes, then model globs, first declared first, then the
    active target), with each target's fallbacks and renames; "" when it has no routes."""
    targets = config.targets

    def then(name: str) -> str:
        return "".join(f", then {fallback}" for fallback in targets[name].fallbacks)

    lines = [
        f"#   {prefix}/... -> {name} (sent without {prefix}){then(name)}"
        for name, spec in targets.items()
        for prefix in spec.prefixes
    ]
    lines += [
        f"#   model {' or '.join(spec.models)} -> {name}{then(name)}" for name, spec in targets.items() if spec.models
    ]
    if not lines and not any(spec.fallbacks or spec.model_map for spec in targets.values()):
        return ""
    lines.append(f"#   anything else -> {config.active} (active){then(config.active)}")
    lines += [
        f"#   port {spec.port} -> {name}{then(name)}" for name, spec in targets.items() if spec.port and spec.fallbacks
    ]
    lines += [
        f"#   {name} is sent model {model} as {sent}"
        for name, spec in targets.items()
        for model, sent in spec.model_map.items()
    ]
    heading = "# Where requests go, first match first (added by trayproxy config show; not in the file):"
    return "\n".join([heading, *lines]) + "\n"


def _mask_table(table: Any, path: tuple[str, ...]) -> None:
    """Mask what ``table`` (the document, a table or an inline table at ``path``) holds."""
    is_target = len(path) == 2 and path[0] == "targets"
    for name, value in list(table.items()):
        if is_target and name == "key":
            _mask_key_source(table, name, value)
        elif is_target and name == "headers" and isinstance(value, MutableMapping):
            _mask_headers(value)
        elif name in _URL_SETTINGS and isinstance(value, str):
            table[name] = redact_url(value)
        elif is_credential_name(name):
            _mask_all(table, name, value)
        elif isinstance(value, Mapping):
            _mask_table(value, (*path, name))
        elif isinstance(value, list):
            for element in value:
                if isinstance(element, Mapping):  # an array of tables
                    _mask_table(element, (*path, name))
    _mask_commented_settings(table, path)


def _mask_key_source(table: Any, name: str, source: Any) -> None:
    if not isinstance(source, MutableMapping):
        _mask_all(table, name, source)
        return
    for kind, spec in list(source.items()):
        if kind in ("env", "keyring") and isinstance(spec, str):
            if looks_like_key(spec):
                source[kind] = MASK
        elif kind == "keyring" and isinstance(spec, bool):
            continue
        elif kind == "command" and isinstance(spec, str):
            source[kind] = redact_text(mask_token_like(spec))
        else:
            _mask_all(source, kind, spec)


def _mask_headers(headers: Any) -> None:
    for name, value in list(headers.items()):
        if not isinstance(value, str):
            _mask_all(headers, name, value)
        elif not (is_placeholder(value) or len(value) < MIN_SECRET_LEN or name.lower() in PLAIN_HEADERS):
            headers[name] = MASK


def _mask_all(table: Any, name: str | int, value: Any) -> None:
    """Mask every string in ``table[name]``, however deep."""
    if isinstance(value, str):
        table[name] = MASK
    elif isinstance(value, MutableMapping):
        for inner, item in list(value.items()):
            _mask_all(value, inner, item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _mask_all(value, index, item)


def _mask_commented_settings(table: Any, path: tuple[str, ...]) -> None:
    """Mask a whole-line comment that is itself a setting (``# key = "..."``: an old key kept
    "just in case"), as that setting would be masked in this table."""
    container = table if isinstance(table, tomlkit.TOMLDocument) else getattr(table, "value", None)
    body = getattr(container, "body", None)
    if body is None:  # an inline table: no lines of its own
        return
    for _, item in body:
        if not isinstance(item, tomlkit.items.Comment):
            continue
        comment = item.trivia.comment
        setting = comment.lstrip("#").strip()
        if "=" not in setting:
            continue
        try:
            document = tomlkit.parse(setting)
        except tomlkit.exceptions.ParseError:
            continue  # words, not a setting
        shown = document.as_string()
        _mask_table(document, path)
        if document.as_string() != shown:
            prefix = comment[: len(comment) - len(comment.lstrip("#"))]
            item.trivia.comment = f"{prefix} {document.as_string().strip()}"
