"""Finding what is wrong in a config file, each problem at the line and column of its key.

:class:`Checker` walks a parsed TOML document for ``parse.py``: unknown keys (with a "did you
mean"), values of the wrong type (with the declared default kept), lists that must hold
strings, and each setting's own check declared in ``options.py``; :class:`Locator` finds where
a key or table is written, and one item of a list or inline table (an element, a named
entry); :func:`nesting_problem` finds arrays or inline tables nested past what the TOML
readers can take, before they are asked to. :class:`ConfigError` carries every problem found,
each formatted ``path:line:col: message``.
"""

from __future__ import annotations

import bisect
import difflib
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from desktop.config import options
from desktop.config.options import Option
from desktop.redaction import MASK, looks_like_key, redact_text

__all__ = [
    "MAX_NESTING",
    "OWN_TYPE_RULES",
    "Checker",
    "ConfigError",
    "Locator",
    "Problem",
    "nesting_problem",
    "type_name",
]

# Settings whose type has a rule of its own, checked with their shape: a key source (a string
# or a one-entry table), a proxy (a URL or false, never true), a route claim (each item placed
# at its own line and column: config/claims.py).
OWN_TYPE_RULES: tuple[Option[Any], ...] = (
    options.KEY,
    options.PROXY,
    options.TARGET_PROXY,
    *options.CLAIM_SETTINGS,
)
# The deepest arrays and inline tables may nest. tomllib recurses for each level (about three
# frames a level: `x = [[[...]]]` 500 deep raised RecursionError out of the parser, so the
# watcher failed and `config check` crashed), and tomlkit, which edits the file, refuses past
# 100 levels. TrayProxy's settings nest 2 deep at most (headers = { ... } in a table).
MAX_NESTING = 100
# What nesting_problem's scan stops at: quotes and comments (to skip), line ends, brackets.
_SCANNED = re.compile(r"[\"'#\n\[\]{}]")
# What ends a value that is not a string, an array or an inline table (a number, true, a date).
_BARE_VALUE_END = re.compile(r"[,\]}\n#]")
# A bare key (TOML 1.0 §Keys).
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the file, and where."""

    line: int
    col: int
    message: str

    def format(self, path: str) -> str:
        """``path:line:col: message``, with any key a message quotes masked: a key pasted into
        the wrong place (a fallback's name, a prefix, ``active``) is quoted by the message that
        says so, which goes to the terminal, the log and the tray's notification."""
        return f"{path}:{self.line}:{self.col}: {mask_quoted_keys(self.message)}"


# A value a message quotes: 'name'.
_QUOTED = re.compile(r"'([^'\n]+)'")


def mask_quoted_keys(message: str) -> str:
    """``message`` with every key in it masked: the shapes the redactor knows, and a quoted
    value shaped like a key (gsk_..., xai-..., a bare 32-character key) that was pasted where a
    name goes."""

    def masked(found: re.Match[str]) -> str:
        value = found.group(1)
        # A URL the redactor has masked the credentials of is shown as it now is.
        if MASK in value or "://" in value or not looks_like_key(value):
            return found.group(0)
        return f"'{MASK}'"

    return _QUOTED.sub(masked, redact_text(message))


class ConfigError(ValueError):
    """The file cannot be used; ``problems`` lists every reason with its position."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(p.format(path) for p in problems))


def nesting_problem(text: str) -> Problem | None:
    """Where ``text`` first opens an array or inline table deeper than MAX_NESTING, or None.

    A scan of the text, not a parse: brackets in strings and comments do not count; a table
    header (``[targets.a]``) opens and closes on its line. Malformed text gets no problem here
    unless it nests too deeply; the parser says what else is wrong."""
    depth = 0
    line, line_start = 1, 0
    at = 0
    while (found := _SCANNED.search(text, at)) is not None:
        at, char = found.start(), found.group()
        if char in "\"'":
            after = _after_string(text, at)
            newlines = text.count("\n", at, after)
            if newlines:
                line += newlines
                line_start = text.rindex("\n", at, after) + 1
            at = after
            continue
        if char == "#":
            comment_end = text.find("\n", at)
            at = len(text) if comment_end < 0 else comment_end
            continue
        if char == "\n":
            line, line_start = line + 1, at + 1
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return Problem(
                    line,
                    at - line_start + 1,
                    f"arrays or inline tables nest more than {MAX_NESTING} levels deep here;"
                    " TrayProxy's settings need 2 at most: remove the extra '[' or '{'",
                )
        else:
            depth = max(0, depth - 1)
        at += 1
    return None


def _after_string(text: str, start: int) -> int:
    """The index just past the TOML string that opens at ``start`` (a quote): basic "..." and
    literal '...' strings end at their line's end at the latest, multi-line ones at their
    closing triple quote (and up to two more quotes, which belong to the string)."""
    quote = text[start]
    escapes = quote == '"'  # literal strings have no escapes
    end = len(text)
    if text.startswith(quote * 3, start):
        at = start + 3
        while at < end:
            if escapes and text[at] == "\\":
                at += 2
            elif text.startswith(quote * 3, at):
                at += 3
                extra = 0
                while at < end and text[at] == quote and extra < 2:
                    at, extra = at + 1, extra + 1
                return at
            else:
                at += 1
        return end
    at = start + 1
    while at < end and text[at] != "\n":
        if escapes and text[at] == "\\" and text[at + 1 : at + 2] != "\n":
            at += 2
        elif text[at] == quote:
            return at + 1
        else:
            at += 1
    return min(at, end)


class Locator:
    """Finds the line of a table or key in the text; a simple line scan, good for files people
    write (one key per line), falling back to the table's header line. Lines end at ``\n``
    alone, as in TOML and editors (``str.splitlines`` also splits at U+2028 and form feeds,
    which a comment may hold, and every later line was then named one too far down)."""

    _HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")

    def __init__(self, text: str) -> None:
        self.text = text
        self.positions: dict[tuple[str, ...], tuple[int, int]] = {}
        # Where each line starts in ``text``, for the items inside a value.
        self.line_starts: list[int] = [0]
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.split("\n"), start=1):
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
            header = self._HEADER.match(line)
            if header:
                table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
                self.positions.setdefault(table, (number, line.index("[") + 1))
                continue
            key = self._KEY.match(line)
            if key:
                name = key.group(1).strip("\"'")
                self.positions.setdefault((*table, name), (number, key.start(1) + 1))

    def find(self, *path: str) -> tuple[int, int]:
        for end in range(len(path), 0, -1):
            if path[:end] in self.positions:
                return self.positions[path[:end]]
        return (1, 1)

    def item(self, path: tuple[str, ...], item: int | str) -> tuple[int, int]:
        """Where one item of the setting at ``path`` is written: element ``item`` (an int) of
        its array, or of a lone string the string itself (item 0); the entry named ``item`` (a
        str) of its inline table or of a table of its own. Where the scan cannot tell (the
        setting written in an inline table of its target, say), the setting's own place."""
        if isinstance(item, str) and (*path, item) in self.positions:
            return self.positions[(*path, item)]
        if path in self.positions:
            line, col = self.positions[path]
            key = _read_key(self.text, self.line_starts[line - 1] + col - 1)
            if key is not None:
                found = _item_start(self.text, _skip_spaces(self.text, key[1]), item)
                if found is not None:
                    return self.line_col(found)
        return self.find(*path)

    def line_col(self, offset: int) -> tuple[int, int]:
        """The line and column (both from 1) of the character at ``offset`` of the text."""
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1


def _skip_spaces(text: str, at: int) -> int:
    """The index of the first character at or after ``at`` that is not a space or a tab."""
    while text[at : at + 1] in (" ", "\t"):
        at += 1
    return at


def _skip_blank(text: str, at: int) -> int:
    """Past spaces, line ends and comments: what may sit between the items of an array."""
    while at < len(text):
        if text[at] in " \t\r\n":
            at += 1
        elif text[at] == "#":
            end = text.find("\n", at)
            at = len(text) if end < 0 else end
        else:
            break
    return at


def _after_value(text: str, at: int) -> int:
    """The index just past the value that starts at ``at``."""
    opened = text[at : at + 1]
    if opened in ('"', "'"):
        return _after_string(text, at)
    if opened not in ("[", "{"):
        found = _BARE_VALUE_END.search(text, at)
        return len(text) if found is None else found.start()
    depth = 0
    while at < len(text):
        char = text[at]
        if char in "\"'":
            at = _after_string(text, at)
            continue
        if char == "#":
            at = _skip_blank(text, at)
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return len(text)


def _read_key(text: str, at: int) -> tuple[str, int] | None:
    """The key written at ``at`` (bare, quoted or dotted) as written, and the index past its
    ``=``; None when no key and ``=`` are there."""
    start = at
    while True:
        at = _skip_spaces(text, at)
        if text[at : at + 1] in ('"', "'"):
            at = _after_string(text, at)
        else:
            bare = _BARE_KEY.match(text, at)
            if bare is None:
                return None
            at = bare.end()
        at = _skip_spaces(text, at)
        if text[at : at + 1] == ".":
            at += 1
        elif text[at : at + 1] == "=":
            return text[start:at].strip(), at + 1
        else:
            return None


def _key_name(written: str) -> str | None:
    """The name a key written as ``written`` stands for (quotes and escapes read); of a dotted
    key, its first part (the table it puts the rest in); None when it is no key."""
    try:
        parsed = tomllib.loads(f"{written} = 0")
    except tomllib.TOMLDecodeError:
        return None
    return next(iter(parsed))


def _item_start(text: str, at: int, item: int | str) -> int | None:
    """Where ``item`` of the value written at ``at`` starts (see :meth:`Locator.item`)."""
    opened = text[at : at + 1]
    if isinstance(item, int):
        if opened in ('"', "'"):
            return at if item == 0 else None
        closing = "]" if opened == "[" else None
    else:
        closing = "}" if opened == "{" else None
    if closing is None:
        return None
    at, index = at + 1, 0
    while True:
        at = _skip_blank(text, at)
        if text[at : at + 1] in (closing, ""):
            return None
        if isinstance(item, int):
            if index == item:
                return at
            value_at = at
        else:
            key = _read_key(text, at)
            if key is None:
                return None
            if _key_name(key[0]) == item:
                return at
            value_at = _skip_blank(text, key[1])
        at = _skip_blank(text, _after_value(text, value_at))
        if text[at : at + 1] != ",":
            return None
        at, index = at + 1, index + 1


class Checker:
    """Collects the problems of one file, each placed at the line and column of its key."""

    def __init__(self, text: str) -> None:
        self.locate = Locator(text)
        self.problems: list[Problem] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        line, col = self.locate.find(*path)
        self.problems.append(Problem(line, col, message))

    def item_problem(self, path: tuple[str, ...], item: int | str, message: str) -> None:
        """A problem of one item of the setting at ``path`` (see :meth:`Locator.item`)."""
        line, col = self.locate.item(path, item)
        self.problems.append(Problem(line, col, message))

    def choice(self, path: tuple[str, ...], option: Option[str], value: str, what: str) -> str:
        """``value`` of the one-word ``option`` at ``path`` (compared lower-case, as people
        write "Info" or "Replay"), or its default with a problem naming ``what`` it is
        ("log level") and the nearest word or all of them."""
        word = value.lower()
        if word in option.choices:
            return word
        close = difflib.get_close_matches(word, option.choices, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"one of {', '.join(option.choices)}"
        self.problem(path, f"unknown {what} '{value}' ({hint})")
        return option.default

    def unknown_keys(self, table: dict[str, Any], known: tuple[str, ...], path: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
                self.problem((*path, key), f"unknown setting '{'.'.join((*path, key))}'{hint}")

    def typed(
        self,
        table: dict[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        path: tuple[str, ...],
        default: Any,
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python, but `port = true` is a mistake.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.problem(
                (*path, key),
                f"'{'.'.join((*path, key))}' must be {names}, not {_TYPE_NAMES.get(type(value), type(value).__name__)}",
            )
            return default
        return value

    def strings(
        self, table: dict[str, Any], key: str, path: tuple[str, ...], default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        values = self.typed(table, key, list, path, default)
        if not all(isinstance(v, str) for v in values):
            self.problem((*path, key), f"'{'.'.join((*path, key))}' must be a list of strings")
            return ()
        return tuple(values)

    def settings(
        self,
        table: dict[str, Any],
        declared: tuple[Option[Any], ...],
        path: tuple[str, ...],
        *,
        tables: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The ``declared`` settings of ``table`` at ``path``, each as written if it has the
        declared type and passes the setting's own check, else its default (and a problem); a
        key that is neither a declared setting nor one of ``tables`` is a problem too. A
        setting in OWN_TYPE_RULES is left for its own rule."""
        self.unknown_keys(table, tuple(option.key for option in declared) + tables, path)
        given: dict[str, Any] = {}
        for option in declared:
            if option in OWN_TYPE_RULES:
                continue
            found = len(self.problems)
            if option.types == (list,):  # every list setting is a list of strings
                value = self.strings(table, option.key, path, option.default)
            else:
                value = self.typed(table, option.key, option.types, path, option.default)
            if option.key in table and len(self.problems) == found:
                problem = option.problem(value)
                if problem:
                    self.problem((*path, option.key), f"'{'.'.join((*path, option.key))}' {problem}")
                    value = option.default
            given[option.key] = value
        return given


def type_name(value: Any) -> str:
    """What ``value`` is, as a person reads it ("a whole number"), never the value itself,
    which may be a key written in the wrong place."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}
