"""The recorded answers on disk: one SQLite file (standard library), one row per exchange.

Each row holds what replaying and exporting need and nothing more: the request's target,
method, path, query (credential parameters dropped), key headers and body; the names and values
of what the answer's Vary named; the answer's status, reason, headers (Set-Cookie and other
credential headers dropped) and its pieces, joined in one BLOB with each piece's length and
seconds after the head. Written in one transaction per entry, so a kill at any moment leaves
whole entries or none (SQLite's WAL: a commit is whole or absent after a crash).

Never written: a credential header, a registered secret (the keys TrayProxy sends, anywhere in
the row: keep_problem), an answer over MAX_ANSWER_BYTES, a request body over
MAX_REQUEST_BODY_BYTES.

Bounded: each row counts its bytes (row_bytes); a put evicts the least recently used rows until
the new one fits under ``max_bytes`` (a hit marks its row used). The file's folder is 0700 and
the file 0600 (SQLite gives its -wal and -shm files the file's mode).

Synchronous and single-threaded: a ``RecordingStore`` belongs to the thread that opened it (the
proxy's one worker thread, recordings.py; ``trayproxy cache`` opens its own). Another process
may hold the same file open: SQLite locks it, a writer waits up to the busy timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote

import platformdirs

from desktop.cache import key
from desktop.cache.encoding import decoded, unreadable_coding
from desktop.config.store import APP_NAME
from desktop.engine.headers import HOP_BY_HOP
from desktop.redaction import holds_registered_secret

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_REQUEST_BODY_BYTES",
    "FoundAnswer",
    "RecordedExchange",
    "RecordingStore",
    "StoreError",
    "StoreStats",
    "TargetStats",
    "default_store_path",
    "keep_problem",
    "row_bytes",
]

# The most of one answer's body kept: past it a recorder stops collecting (a download is no
# answer worth replaying, and one must not push every other recording out).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# A request body the engine holds (and so may look up) is at most 1 MiB (engine: MAX_HELD_BODY).
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# What a row costs besides its texts and BLOBs: SQLite's record header, rowid, the three
# indexes' entries (base key 64 hex, target, used time), leaf pages not filled to the brim.
ROW_OVERHEAD_BYTES = 640
# SQLite's page (the default since 3.12): the WAL's checkpoint interval is counted in pages.
PAGE_BYTES = 4096
# The -wal file is checkpointed into the file once it holds an eighth of the cap, and cut back
# to that size afterwards (it otherwise keeps its largest size): between these bounds, so a
# small cap is not dwarfed by its WAL (SQLite's default, 1000 pages, is 4 MiB) and a large one
# does not checkpoint after every entry.
MIN_WAL_BYTES = 256 * 1024
MAX_WAL_BYTES = 4 * 1024 * 1024
# Changed when the table changes shape; a file of a newer version is refused, not rewritten.
SCHEMA_VERSION = 1
# How long a writer waits for another process's write (`trayproxy cache import` meanwhile).
DEFAULT_BUSY_TIMEOUT_S = 10.0
# Rows written per transaction by put_many (an import): small enough that the proxy's own
# writes do not wait long behind it.
IMPORT_BATCH_ROWS = 32

FOLDER_NAME = "recordings"
FILE_NAME = "answers.sqlite3"

# Small columns first, BLOBs last: reading a row's size or times then stops before the pieces
# (a big answer's overflow pages are never read to evict or count it). ``total`` holds the sum
# of ``size``, kept by the triggers, so a put does not add up every row (5 ms per put at 2,000
# rows when it did), whoever writes (the proxy, `trayproxy cache import`).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY,
    base TEXT NOT NULL,
    vary TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    size INTEGER NOT NULL,
    recorded_at REAL NOT NULL,
    used_at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_headers TEXT NOT NULL,
    response_headers TEXT NOT NULL,
    pieces TEXT NOT NULL,
    request_body BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_base ON recordings (base);
CREATE INDEX IF NOT EXISTS recordings_used ON recordings (used_at, size);
CREATE INDEX IF NOT EXISTS recordings_target ON recordings (target, size, recorded_at);
CREATE TABLE IF NOT EXISTS total (bytes INTEGER NOT NULL);
INSERT INTO total (bytes) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM total);
CREATE TRIGGER IF NOT EXISTS recordings_added AFTER INSERT ON recordings
    BEGIN UPDATE total SET bytes = bytes + NEW.size; END;
CREATE TRIGGER IF NOT EXISTS recordings_removed AFTER DELETE ON recordings
    BEGIN UPDATE total SET bytes = bytes - OLD.size; END;
"""

Headers = tuple[tuple[str, str], ...]
Vary = tuple[tuple[str, str | None], ...]


def default_store_path() -> Path:
    """Where the proxy and `trayproxy cache` keep the recording: the user cache directory
    (``~/.cache/TrayProxy/recordings/answers.sqlite3`` on Linux)."""
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / FOLDER_NAME / FILE_NAME


class StoreError(Exception):
    """The store cannot be opened or read; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    """One recorded exchange, as stored, exported and imported."""

    target: str
    method: str
    path: str
    query: str  # raw, no "?", credential parameters dropped
    request_headers: Headers  # the key headers only (key.KEY_HEADERS), lower-cased names
    request_body: bytes
    vary: Vary  # what the answer's Vary named, and the request's values (None: not sent)
    status: int
    reason: str
    response_headers: Headers  # as the client got them, Set-Cookie dropped
    pieces: tuple[tuple[float, bytes], ...]  # (seconds after the head, bytes), as they came
    recorded_at: float  # Unix time

    @property
    def body_bytes(self) -> int:
        return sum(len(piece) for _, piece in self.pieces)

    def base_key(self) -> str:
        return key.base_key(
            self.target, self.method, self.path, self.query, self.request_body, self.request_headers
        )


@dataclass(frozen=True, slots=True)
class FoundAnswer:
    """A stored answer a lookup found: what a replay sends."""

    entry_id: int
    status: int
    reason: str
    headers: Headers
    pieces: tuple[tuple[float, bytes], ...]


@dataclass(frozen=True, slots=True)
class TargetStats:
    target: str
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What `trayproxy cache stats` shows."""

    path: Path
    entries: int
    bytes: int  # what the entries count against the cap (row_bytes)
    file_bytes: int  # the file and its -wal on disk
    targets: tuple[TargetStats, ...]  # by name
    oldest: datetime | None  # the earliest recorded_at, UTC; None when empty
    newest: datetime | None


# An answer in more pieces is not kept: each piece is a row of the replay's work and memory (a
# long streamed answer of 16 MiB comes in tens of thousands).
MAX_PIECES = 100_000


NEAR_ROWS = 200  # entries an offline miss compares itself with, at most


@dataclass(frozen=True, slots=True)
class NearEntry:
    """A recorded request of the same target, method and path as one that missed."""

    query: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes


def keep_problem(exchange: RecordedExchange, also_secret: Sequence[str] = ()) -> str | None:
    """Why ``exchange`` must not be written (a person reads it after "not kept: "); None
    when it may be. ``also_secret``: keys its request carried (the tool's own), which the
    answer must not hold either."""
    if not 200 <= exchange.status <= 299:
        return f"status {exchange.status} is not a success (2xx)"
    if exchange.status == 206:
        return "status 206 is a part of an answer, not the answer"
    if exchange.pieces and (exchange.status in (204, 205) or exchange.method == "HEAD"):
        return f"a {exchange.method} answered {exchange.status} has no body, and this one has pieces"
    if len(exchange.pieces) > MAX_PIECES:
        return f"the answer came in over {MAX_PIECES:,} pieces"
    lengths = [value for name, value in exchange.response_headers if name.lower() == "content-length"]
    if len(lengths) > 1 or (
        lengths and exchange.method != "HEAD" and lengths[0].strip() != str(exchange.body_bytes)
    ):
        return f"Content-Length {', '.join(lengths)} is not the answer's length ({exchange.body_bytes} bytes)"
    for name, _ in exchange.response_headers:
        if name.lower() in HOP_BY_HOP:  # a replay frames its body itself
            return f"header {name} is about a connection, not the answer"
    if len(exchange.request_body) > MAX_REQUEST_BODY_BYTES:
        return f"the request body is over {MAX_REQUEST_BODY_BYTES} bytes"
    if exchange.body_bytes > MAX_ANSWER_BYTES:
        return f"the answer is over {MAX_ANSWER_BYTES} bytes"
    for name, _ in exchange.request_headers:
        if not key.is_key_header(name):
            return f"request header {name} is not one of the key headers ({', '.join(key.KEY_HEADERS)})"
    for name, _ in (*exchange.vary, *exchange.response_headers):
        if key.is_credential_header(name):
            return f"header {name} may hold a credential"
    texts = [
        exchange.path,
        unquote(exchange.path),
        exchange.query,
        unquote(exchange.query),
        *(value for _, value in exchange.request_headers),
        *(value for _, value in exchange.vary if value is not None),
        *(value for _, value in exchange.response_headers),
    ]
    if any(holds_registered_secret(text) for text in texts) or holds_registered_secret(exchange.request_body):
        return "it holds a key TrayProxy sends"
    # The answer whole, as the tool reads it: a key may be cut across two pieces of a stream.
    body = b"".join(piece for _, piece in exchange.pieces)
    readable = decoded(exchange.response_headers, body) if exchange.method != "HEAD" else body
    if readable is None:
        coding = unreadable_coding(exchange.response_headers)
        how = f"compressed as {coding}, which" if coding else "compressed in a way that"
        return f"its answer is {how} TrayProxy cannot read to check it holds no key"
    # As sent and as read (the same bytes when the answer is not compressed).
    answers = (body,) if readable is body else (body, readable)
    if any(holds_registered_secret(answer) for answer in answers):
        return "its answer holds a key TrayProxy sends"
    for secret in also_secret:
        encoded = secret.encode("utf-8", "surrogatepass")
        if any(encoded in text for text in (*answers, exchange.request_body)) or secret in exchange.path:
            return "it holds the key your tool sent"
    return None


def row_bytes(exchange: RecordedExchange) -> int:
    """What a row counts against the cap: its texts and BLOBs plus ROW_OVERHEAD_BYTES. (SQLite
    fills a big row's overflow pages whole, keeping the remainder on the leaf page: measured,
    the file stays within the counted bytes plus its fixed pages, under 64 KiB.)"""
    size = (
        ROW_OVERHEAD_BYTES
        + exchange.body_bytes
        + len(exchange.request_body)
        + len(exchange.target)
        + len(exchange.method)
        + len(exchange.path)
        + len(exchange.query)
        + len(exchange.reason)
        + len(_json(exchange.request_headers))
        + len(_json(exchange.vary))
        + len(_json(exchange.response_headers))
        + 24 * len(exchange.pieces)  # each piece's [length, seconds] in the pieces column
    )
    return size


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _pairs(text: str) -> Headers:
    return tuple((str(name), str(value)) for name, value in json.loads(text))


def _make_private_file(path: Path) -> None:
    """The folder (0700) and the file (0600), made before SQLite opens it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform != "win32":
        os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if sys.platform != "win32" and os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def _statements(script: str) -> list[str]:
    """``script`` cut into its statements (a trigger's body holds a ";" of its own)."""
    out: list[str] = []
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    return out


def _make_tables(db: sqlite3.Connection) -> None:
    """The table and its indexes, in one transaction (another process may be making them too)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(_SCHEMA):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class RecordingStore:
    """One connection to the recording file; use it from the thread that opened it."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._wal_set_for: int | None = None  # the cap the WAL's bounds were set for
        self.evicted = 0  # answers this store object dropped to stay under a cap, so far

    @classmethod
    def open(
        cls, path: Path | None = None, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> RecordingStore:
        """Open (making it, empty, if need be) the store at ``path`` (default_store_path()).
        Raises StoreError when the file cannot be made, opened or read as a recording."""
        path = path or default_store_path()
        try:
            _make_private_file(path)
            db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the recording {path}: {exc}") from exc
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the recording {path} was written by a newer TrayProxy (format {version}; this one reads"
                    f" {SCHEMA_VERSION}); update TrayProxy or move the file away"
                )
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses no committed entry to a killed process, only (perhaps) the
            # last ones to a power cut; each commit is still whole or absent.
            db.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                _make_tables(db)
            db.execute("SELECT count(*) FROM recordings WHERE id = 0").fetchone()
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"cannot read the recording {path}: {exc}") from exc
        return cls(path, db)

    def close(self) -> None:
        """Close the connection (the last one checkpoints the WAL into the file)."""
        self._db.close()

    def __enter__(self) -> RecordingStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # Reading ------------------------------------------------------------------------------------

    def find(self, base: str, headers: key.RequestHeaders) -> FoundAnswer | None:
        """The newest entry stored under ``base`` whose Vary values ``headers`` match."""
        rows = self._db.execute(
            "SELECT id, vary FROM recordings WHERE base = ? ORDER BY recorded_at DESC, id DESC", (base,)
        ).fetchall()
        for entry_id, vary_text in rows:
            if key.matches_vary(json.loads(vary_text), headers):
                return self._answer(entry_id)
        return None

    def near(self, target: str, method: str, path: str, limit: int = NEAR_ROWS) -> list[NearEntry]:
        """Up to ``limit`` entries of ``target`` for ``method`` and ``path`` (their query, key
        headers and body), the newest first: what an offline miss is told it missed."""
        rows = self._db.execute(
            "SELECT query, request_headers, request_body FROM recordings WHERE target = ? AND method = ?"
            " AND path = ? ORDER BY recorded_at DESC, id DESC LIMIT ?",
            (target, method, path, limit),
        ).fetchall()
        return [NearEntry(query, _pairs(headers_text), body) for query, headers_text, body in rows]

    def answers_per_target(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT target, COUNT(*) FROM recordings GROUP BY target").fetchall())

    def _answer(self, entry_id: int) -> FoundAnswer | None:
        row = self._db.execute(
            "SELECT status, reason, response_headers, pieces, body FROM recordings WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None:
            return None
        status, reason, headers_text, pieces_text, body = row
        return FoundAnswer(entry_id, status, reason, _pairs(headers_text), _split(body, pieces_text))

    def touch(self, entry_ids: Iterable[int]) -> None:
        """Mark entries used now (the last to be evicted), in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._mark_used(entry_ids)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _mark_used(self, entry_ids: Iterable[int]) -> None:
        now = time.time()
        self._db.executemany("UPDATE recordings SET used_at = ? WHERE id = ?", ((now, i) for i in entry_ids))

    def stats(self) -> StoreStats:
        """Entries, bytes and recorded times, in all and per target."""
        count, total, oldest, newest = self._db.execute(
            "SELECT count(*), total(size), min(recorded_at), max(recorded_at) FROM recordings"
        ).fetchone()
        targets = tuple(
            TargetStats(target, entries, int(size))
            for target, entries, size in self._db.execute(
                "SELECT target, count(*), total(size) FROM recordings GROUP BY target ORDER BY target"
            )
        )
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
        return StoreStats(
            path=self.path,
            entries=count,
            bytes=int(total),
            file_bytes=file_bytes,
            targets=targets,
            oldest=None if oldest is None else datetime.fromtimestamp(oldest, UTC),
            newest=None if newest is None else datetime.fromtimestamp(newest, UTC),
        )

    def exchanges(self, target: str | None = None) -> Iterator[RecordedExchange]:
        """Every entry (of ``target`` only, when given), the earliest recorded first."""
        where, args = ("WHERE target = ?", (target,)) if target is not None else ("", ())
        cursor = self._db.execute(
            "SELECT target, method, path, query, request_headers, request_body, vary, status, reason,"
            f" response_headers, pieces, body, recorded_at FROM recordings {where} ORDER BY recorded_at, id",
            args,
        )
        for row in cursor:
            (target_name, method, path, query, request_headers, request_body, vary, status, reason,
             response_headers, pieces, body, recorded_at) = row  # fmt: skip
            yield RecordedExchange(
                target=target_name,
                method=method,
                path=path,
                query=query,
                request_headers=_pairs(request_headers),
                request_body=bytes(request_body),
                vary=tuple((str(name), value) for name, value in json.loads(vary)),
                status=status,
                reason=reason,
                response_headers=_pairs(response_headers),
                pieces=_split(body, pieces),
                recorded_at=recorded_at,
            )

    # Writing ------------------------------------------------------------------------------------

    def put(
        self, exchange: RecordedExchange, *, max_bytes: int, used: Iterable[int] = (), checked: bool = False
    ) -> bool:
        """Write ``exchange`` in one transaction, replacing an entry of the same key and Vary
        values, after evicting the least recently used until it fits under ``max_bytes``
        (the entries ``used`` marked used first, in the same transaction: touch()).
        False (nothing written) when it is refused (keep_problem, unless ``checked`` already)
        or alone over ``max_bytes``."""
        if (not checked and keep_problem(exchange) is not None) or row_bytes(exchange) > max_bytes:
            return False
        self._bound_wal(max_bytes)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._mark_used(used)
            self._write(exchange, max_bytes=max_bytes, used_at=time.time())
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return True

    def put_many(self, exchanges: Iterable[RecordedExchange], *, max_bytes: int | None = None) -> int:
        """Write each of ``exchanges`` (an import), IMPORT_BATCH_ROWS to a transaction;
        ``max_bytes`` None: no eviction (the proxy trims at its next write). Returns how many
        were written (a refused one is skipped: check keep_problem first)."""
        written = 0
        batch: list[RecordedExchange] = []

        def flush() -> None:
            nonlocal written
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                for exchange in batch:
                    self._write(exchange, max_bytes=max_bytes, used_at=now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            written += len(batch)
            batch.clear()

        for exchange in exchanges:
            if keep_problem(exchange) is not None or (
                max_bytes is not None and row_bytes(exchange) > max_bytes
            ):
                continue
            batch.append(exchange)
            if len(batch) >= IMPORT_BATCH_ROWS:
                flush()
        if batch:
            flush()
        return written

    def _bound_wal(self, max_bytes: int) -> None:
        """Checkpoint the WAL at an eighth of the cap (within MIN/MAX_WAL_BYTES) and cut it back
        to that after."""
        if max_bytes == self._wal_set_for:
            return
        limit = min(MAX_WAL_BYTES, max(MIN_WAL_BYTES, max_bytes // 8))
        self._db.execute(f"PRAGMA journal_size_limit = {limit}")
        self._db.execute(f"PRAGMA wal_autocheckpoint = {limit // PAGE_BYTES}")
        self._wal_set_for = max_bytes

    def _write(self, exchange: RecordedExchange, *, max_bytes: int | None, used_at: float) -> None:
        base = exchange.base_key()
        vary_text = _json(exchange.vary)
        self._db.execute("DELETE FROM recordings WHERE base = ? AND vary = ?", (base, vary_text))
        size = row_bytes(exchange)
        if max_bytes is not None:
            self._evict(max_bytes - size)
        pieces = [[len(piece), round(offset, 6)] for offset, piece in exchange.pieces]
        self._db.execute(
            "INSERT INTO recordings (base, vary, target, method, path, query, request_headers, request_body,"
            " status, reason, response_headers, pieces, body, size, recorded_at, used_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                base,
                vary_text,
                exchange.target,
                exchange.method,
                exchange.path,
                exchange.query,
                _json(exchange.request_headers),
                exchange.request_body,
                exchange.status,
                exchange.reason,
                _json(exchange.response_headers),
                _json(pieces),
                b"".join(piece for _, piece in exchange.pieces),
                size,
                exchange.recorded_at,
                used_at,
            ),
        )

    def _evict(self, room_bytes: int) -> int:
        """Delete the least recently used rows until the rest take at most ``room_bytes``."""
        total = int(self._db.execute("SELECT bytes FROM total").fetchone()[0])
        if total <= room_bytes:
            return 0
        doomed: list[int] = []
        for entry_id, size in self._db.execute("SELECT id, size FROM recordings ORDER BY used_at, id"):
            doomed.append(entry_id)
            total -= size
            if total <= room_bytes:
                break
        self._db.executemany("DELETE FROM recordings WHERE id = ?", ((entry_id,) for entry_id in doomed))
        self.evicted += len(doomed)
        return len(doomed)

    def trim(self, max_bytes: int) -> int:
        """Evict the least recently used until the rest fit under ``max_bytes`` (a lowered cap);
        returns how many went."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            evicted = self._evict(max_bytes)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return evicted

    def clear(self, target: str | None = None) -> int:
        """Delete every entry (of ``target`` only, when given); returns how many went. The file
        is compacted after, so what was cleared does not linger in its free pages."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if target is None:
                cleared = self._db.execute("DELETE FROM recordings").rowcount
            else:
                cleared = self._db.execute("DELETE FROM recordings WHERE target = ?", (target,)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if cleared:
            # Give the space back: prompts and answers a person cleared should not linger in free
            # pages. VACUUM needs no other connection writing; if one is, the space is reused later.
            try:
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass
        return cleared


def _split(body: bytes, pieces_text: str) -> tuple[tuple[float, bytes], ...]:
    """The stored BLOB cut back into its pieces, each with its seconds."""
    out: list[tuple[float, bytes]] = []
    start = 0
    data = bytes(body)
    for length, offset in json.loads(pieces_text):
        out.append((float(offset), data[start : start + length]))
        start += length
    return tuple(out)
