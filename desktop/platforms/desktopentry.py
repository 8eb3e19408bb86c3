"""The Desktop Entry file format (freedesktop.org Desktop Entry spec 1.4): quoting an ``Exec``
line and reading it back, escaping string values, reading the ``[Desktop Entry]`` group.

Pure text, no files written and nothing of ours imported: the autostart entry and the launcher
(platforms/linux.py) are written in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["GROUP", "escape_string", "format_exec", "parse_exec", "read_entry", "unescape_string"]

GROUP = "[Desktop Entry]"
# Desktop Entry spec, "The Exec key": an argument holding any of these must be quoted.
EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
# Inside double quotes, these four are preceded by a backslash (same section).
EXEC_QUOTED_ESCAPES = frozenset('"`$\\')
# String values: \s \n \t \r \\ (section "Possible value types").
STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def format_exec(argv: Sequence[str]) -> str:
    """``argv`` as an ``Exec`` value, quoted per argument and escaped as a string value."""
    if not argv:
        raise ValueError("an Exec line needs a program")
    words = []
    for arg in argv:
        if arg and not EXEC_RESERVED.intersection(arg):
            word = arg
        else:
            word = '"' + "".join("\\" + c if c in EXEC_QUOTED_ESCAPES else c for c in arg) + '"'
        # Field codes: a literal percent sign is written %% (quoted or not).
        words.append(word.replace("%", "%%"))
    return escape_string(" ".join(words))


def parse_exec(value: str) -> list[str]:
    """An ``Exec`` value (as it stands in the file) back to argv; raises ValueError."""
    text = unescape_string(value)
    argv: list[str] = []
    current: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            if text[i + 1 : i + 2] == "%":
                current.append("%")
                in_word = True
                i += 2
                continue
            raise ValueError(f"field code at column {i + 1}: this is not our entry")
        if c == " ":
            if in_word:
                argv.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise ValueError("unterminated quote")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and text[i + 1 : i + 2] in EXEC_QUOTED_ESCAPES:
                    current.append(text[i + 1])
                    i += 2
                elif c == "%" and text[i + 1 : i + 2] == "%":
                    current.append("%")
                    i += 2
                else:
                    current.append(c)
                    i += 1
            continue
        current.append(c)
        i += 1
    if in_word:
        argv.append("".join(current))
    return argv


def escape_string(text: str) -> str:
    """``text`` as a string value (section "Possible value types")."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    # A leading space would be trimmed by readers; the spec's \s keeps it.
    return "\\s" + out[1:] if out.startswith(" ") else out


def unescape_string(text: str) -> str:
    """A string value as it stands in the file, back to its text."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in STRING_ESCAPES:
            out.append(STRING_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_entry(path: Path) -> dict[str, str]:
    """The keys of the ``[Desktop Entry]`` group (raw values, later duplicates ignored)."""
    keys: dict[str, str] = {}
    in_group = False
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            in_group = stripped == GROUP
            continue
        if in_group and "=" in line:
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), value.strip())
    return keys
