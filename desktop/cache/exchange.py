"""Recordings in and out of the store: the JSONL export format (docs/recordings.md).

One recorded exchange a line, each line a JSON object carrying ``"format":
"trayproxy-recording"`` and ``"version": 1``, so a file can be checked before it is trusted and
a later format told apart. Lines are ASCII (JSON escapes for the rest), so any text stream, a
Windows console's included, takes them.

An import reads the whole file first: the first line that is not a valid recording stops it
with RecordingFormatError (its line number and what is wrong), and nothing is imported. Keys
are not in the file: they are recomputed (key.py) as the entries are written, so an export
still replays after the key's recipe changes. An entry holding a credential header, Set-Cookie
or a key TrayProxy sends (a registered secret: register the config's keys before importing) is
refused like any other bad line.

Synchronous, on the store's thread (the CLI's). Imports the store and the model's header check.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from desktop.cache import key
from desktop.cache.store import MAX_ANSWER_BYTES, RecordedExchange, RecordingStore, keep_problem
from desktop.config.model import header_problem

__all__ = [
    "FORMAT",
    "VERSION",
    "RecordingFormatError",
    "exchange_line",
    "export_to",
    "import_from",
    "read_line",
]

FORMAT = "trayproxy-recording"
VERSION = 1
# A line holds at most a 16 MiB answer as base64 (4/3 of it), a 1 MiB request body likewise, and
# their JSON: a longer one is refused before it is parsed.
MAX_LINE_CHARS = 3 * MAX_ANSWER_BYTES
MAX_REASON_CHARS = 200
FUTURE_SLACK_S = 24 * 3600  # clocks of the machines that recorded and import may differ
# The status line's methods are tokens (RFC 9110 §9.1); LLM APIs use a handful.
_METHOD_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class RecordingFormatError(ValueError):
    """A line of an import is not a recording this TrayProxy takes."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


# Out ------------------------------------------------------------------------------------------


def _bytes_out(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def exchange_line(exchange: RecordedExchange) -> str:
    """``exchange`` as one line of the export (with its newline)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "target": exchange.target,
        "method": exchange.method,
        "path": exchange.path,
        "query": exchange.query,
        "request": {
            "headers": [list(pair) for pair in exchange.request_headers],
            "body": _bytes_out(exchange.request_body),
        },
        "vary": dict(exchange.vary),
        "response": {
            "status": exchange.status,
            "reason": exchange.reason,
            "headers": [list(pair) for pair in exchange.response_headers],
            "pieces": [[round(offset, 6), _bytes_out(piece)] for offset, piece in exchange.pieces],
        },
        "recorded_at": datetime.fromtimestamp(exchange.recorded_at, UTC).isoformat(timespec="microseconds"),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True) + "\n"


def export_to(store: RecordingStore, stream: IO[str], target: str | None = None) -> int:
    """Write every entry (of ``target`` only, when given) to ``stream``, the earliest recorded
    first; returns how many."""
    count = 0
    for exchange in store.exchanges(target):
        stream.write(exchange_line(exchange))
        count += 1
    return count


# In -------------------------------------------------------------------------------------------


class _Bad(Exception):
    """What is wrong with the line being read (read_line adds the line number)."""


def _field(document: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    label = f"{where}{name}"
    if name not in document:
        raise _Bad(f"{label} is missing")
    value = document[name]
    # bool is an int to Python, never to this format.
    if isinstance(value, bool) and kind is not bool:
        raise _Bad(f"{label} must be {_kind_name(kind)}, not true/false")
    if not isinstance(value, kind):
        raise _Bad(f"{label} must be {_kind_name(kind)}, not {_json_kind(value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", dict: "an object", list: "an array", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return {str: "a string", int: "a number", float: "a number", dict: "an object", list: "an array"}.get(
        type(value), type(value).__name__
    )


def _bytes_in(value: object, label: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Bad(f'{label} holds a lone surrogate; write such bytes as {{"base64": ...}}') from exc
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Bad(f"{label}.base64 is not valid base64") from exc
    raise _Bad(f'{label} must be a string or {{"base64": "..."}}, not {_json_kind(value)}')


def _headers_in(value: object, label: str, *, lower: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise _Bad(f"{label} must be an array of [name, value] pairs, not {_json_kind(value)}")
    out = []
    for index, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise _Bad(f"{label}[{index}] must be a [name, value] pair of strings")
        name, text = pair
        problem = header_problem(name, text)
        if problem:
            raise _Bad(f"{label}[{index}]: {problem}")
        out.append((name.lower() if lower else name, text))
    return tuple(out)


def _recorded_at(value: object) -> float:
    if not isinstance(value, str):
        raise _Bad(f"recorded_at must be an ISO 8601 time as a string, not {_json_kind(value)}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Bad(f"recorded_at {value!r} is not an ISO 8601 time (such as 2025-01-31T12:00:00Z)") from exc
    if when.tzinfo is None:
        raise _Bad(f"recorded_at {value!r} has no time zone; end it with Z for UTC")
    # The newest of a request's answers is the one replayed: one dated ahead would stay newest.
    if when.timestamp() > time.time() + FUTURE_SLACK_S:
        raise _Bad(f"recorded_at {value!r} is in the future")
    return when.timestamp()


def _exchange_of(document: object) -> RecordedExchange:
    if not isinstance(document, dict):
        raise _Bad(f"a line must be a JSON object, not {_json_kind(document)}")
    if document.get("format") != FORMAT:
        raise _Bad(f'not a TrayProxy recording: "format" must be "{FORMAT}"')
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Bad('"version" must be a whole number')
    if version != VERSION:
        newer = " (written by a newer TrayProxy; update this one)" if version > VERSION else ""
        raise _Bad(f"version {version} is not one this TrayProxy reads ({VERSION}){newer}")
    target = _field(document, "target", str)
    if not target:
        raise _Bad("target is empty")
    if not target.isprintable():
        raise _Bad(f"target {target!r} holds control characters")
    method = _field(document, "method", str)
    if not method or not set(method) <= _METHOD_CHARS:
        raise _Bad(f"method {method!r} is not an HTTP method")
    path = _field(document, "path", str)
    if not path.startswith("/"):
        raise _Bad(f"path {path!r} must start with /")
    query = _field(document, "query", str)
    if query != key.query_without_credentials(query):
        raise _Bad("query holds a credential parameter (key=, token=...): recordings never hold one")
    request = _field(document, "request", dict)
    request_headers = _headers_in(_field(request, "headers", list, "request."), "request.headers", lower=True)
    request_body = _bytes_in(_field(request, "body", (str, dict), "request."), "request.body")
    vary_doc = _field(document, "vary", dict)
    vary: list[tuple[str, str | None]] = []
    for name, value in sorted(vary_doc.items()):
        if value is not None and not isinstance(value, str):
            raise _Bad(f"vary.{name} must be a string or null, not {_json_kind(value)}")
        problem = header_problem(name, value or "")
        if problem:
            raise _Bad(f"vary: {problem}")
        vary.append((name.lower(), value))
    response = _field(document, "response", dict)
    status = _field(response, "status", int, "response.")
    reason = _field(response, "reason", str, "response.")
    if not reason.isprintable() or not reason.isascii() or len(reason) > MAX_REASON_CHARS:
        raise _Bad(f"response.reason {reason[:40]!r} must be printable ASCII of at most {MAX_REASON_CHARS} characters")
    response_headers = _headers_in(_field(response, "headers", list, "response."), "response.headers", lower=False)
    pieces_doc = _field(response, "pieces", list, "response.")
    pieces: list[tuple[float, bytes]] = []
    last = 0.0
    body_bytes = 0
    for index, item in enumerate(pieces_doc):
        label = f"response.pieces[{index}]"
        if not (isinstance(item, list) and len(item) == 2):
            raise _Bad(f"{label} must be a [seconds, text] pair")
        offset, data = item
        if (
            isinstance(offset, bool)
            or not isinstance(offset, int | float)
            or not math.isfinite(offset)
            or offset < 0
        ):
            raise _Bad(f"{label}: the seconds must be a number, 0 or more")
        if offset < last:
            raise _Bad(f"{label}: the seconds must not go back ({offset} after {last})")
        last = float(offset)
        piece = _bytes_in(data, label)
        body_bytes += len(piece)
        if body_bytes > MAX_ANSWER_BYTES:
            raise _Bad(f"the answer is over {MAX_ANSWER_BYTES} bytes, the most a recording keeps")
        pieces.append((last, piece))
    exchange = RecordedExchange(
        target=target,
        method=method,
        path=path,
        query=query,
        request_headers=request_headers,
        request_body=request_body,
        vary=tuple(vary),
        status=status,
        reason=reason,
        response_headers=response_headers,
        pieces=tuple(pieces),
        recorded_at=_recorded_at(document.get("recorded_at")),
    )
    problem = keep_problem(exchange)
    if problem:
        raise _Bad(f"not taken: {problem}")
    return exchange


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose every name is given once: with two, a reader would see the first
    and the import take the last."""
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise _Bad(f'"{name}" is given twice in one object')
        document[name] = value
    return document


def read_line(text: str, line: int) -> RecordedExchange:
    """One line of an export, checked; raises RecordingFormatError naming ``line``."""
    if len(text) > MAX_LINE_CHARS:
        raise RecordingFormatError(line, f"longer than {MAX_LINE_CHARS:,} characters, the most a recording takes")
    try:
        document = json.loads(text, object_pairs_hook=_unique_members)
    except _Bad as bad:
        raise RecordingFormatError(line, str(bad)) from None
    except ValueError as exc:
        raise RecordingFormatError(line, f"not JSON ({exc})") from None
    try:
        return _exchange_of(document)
    except _Bad as bad:
        raise RecordingFormatError(line, str(bad)) from None


def _numbered(lines: IO[bytes]) -> Iterator[tuple[int, str]]:
    """Each line that is not blank, with its number, decoded from UTF-8."""
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordingFormatError(number, f"not UTF-8 text (byte {exc.start + 1})") from None
        if text.strip():
            yield number, text


def _import_lines(store: RecordingStore, lines: IO[bytes], max_bytes: int | None) -> int:
    for number, text in _numbered(lines):
        read_line(text, number)
    lines.seek(0)
    return store.put_many((read_line(text, number) for number, text in _numbered(lines)), max_bytes=max_bytes)


def import_from(
    store: RecordingStore,
    source: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    max_bytes: int | None = None,
) -> int:
    """Check every line of ``source`` (a file's path, or a stream such as stdin, text or
    binary), then write its recordings to ``store`` (an entry with the same key and Vary values
    is replaced); returns how many. Raises RecordingFormatError (nothing written) at the first
    bad line, OSError when the file cannot be read. ``max_bytes``: evict the least recently
    used to stay under it (None: no eviction now; the proxy trims at its next write)."""
    if isinstance(source, str | os.PathLike):
        with open(Path(source), "rb") as lines:
            return _import_lines(store, lines, max_bytes)
    # A stream is read once: keep it in a temporary file between the check and the writing.
    with tempfile.TemporaryFile("w+b") as spool:
        number = 0
        stream: Iterable[str | bytes] = source
        try:
            for number, chunk in enumerate(stream, 1):  # noqa: B007 (the number names a bad line)
                spool.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "surrogateescape"))
        except UnicodeDecodeError as exc:
            raise RecordingFormatError(number + 1, f"not UTF-8 text (byte {exc.start + 1})") from None
        spool.seek(0)
        return _import_lines(store, spool, max_bytes)
