"""The recording the listeners share: the engine's AnswerRecall (engine/recall.py) over the store.

``Recordings.lookup`` decides by the first target's mode:
- record: every request goes out; a Recorder keeps its answer. No lookup, no coalescing
  (an eval samples the same prompt on purpose).
- replay: a stored answer is a Replay; a miss goes out with a Recorder. Identical requests that
  miss at once coalesce: the first leads (its Recorder), the rest await the leader's head: a
  2xx head (and the same values of what its Vary names) and they follow its pieces as they
  arrive (Replay source "follow"); anything else and each goes out itself.
- offline: a stored answer, or None (the engine answers 504 cache_offline_miss).
``Cache-Control: no-store`` on the request: never looked up nor kept (offline: None).
``no-cache``: not looked up but kept (a refresh); offline has no target to refresh from, so
there it is looked up as usual.

A Recorder keeps an answer only when it ended cleanly: a 2xx head, no note on the end (not cut,
the client did not leave), no error event in an event stream, at most MAX_ANSWER_BYTES, no
``Vary: *``, and nothing of a registered secret (store.keep_problem). Its pieces are kept as
they came, each with its seconds after the head, and replayed back to back ("fast") or at
those offsets ("recorded").

Threads: lookup, the Recorder's calls and ``configure`` run on the proxy's loop and never touch
the file; every read and write of it runs in ONE worker thread (made at the first lookup), the
only owner of the store's connection. A store that cannot be opened or read is logged once
and every request is a miss: the proxy never fails for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote_plus

from multidict import CIMultiDict

from desktop.cache import key
from desktop.cache.encoding import decoded, unreadable_coding
from desktop.cache.store import (
    MAX_ANSWER_BYTES,
    FoundAnswer,
    RecordedExchange,
    RecordingStore,
    StoreError,
    default_store_path,
    keep_problem,
)
from desktop.config.model import Recording
from desktop.engine.capture import ExchangeEnd
from desktop.engine.headers import HOP_BY_HOP
from desktop.engine.recall import AnswerRecall, RecallRequest, Recorder, Replay
from desktop.redaction import looks_like_key, redact_target

__all__ = ["AnswerRecorder", "Recordings", "ends_with_final_event", "holds_error_event"]

log = logging.getLogger("trayproxy.cache")

MIB = 1024 * 1024
# How long the worker waits for another process's write (`trayproxy cache import`) before a
# write of its own is given up (logged once): lookups queue behind it in the one worker.
WORKER_BUSY_TIMEOUT_S = 2.0
# How long an identical request waits for its leader's head before going out itself: a
# generous bound on a target's time to first byte, so a lost leader cannot hold others forever.
FOLLOW_HEAD_WAIT_S = 300.0

# How long after a hit its entry is marked used (with every other hit meanwhile); a put
# marks them first whenever it comes, so eviction never waits for this.
TOUCH_DELAY_S = 1.0

T = TypeVar("T")
Head = tuple[int, str, tuple[tuple[str, str], ...]]


def cache_directives(raw_headers: Sequence[tuple[bytes, bytes]]) -> frozenset[str]:
    """The request's Cache-Control directive names, lower-cased (RFC 9111 §5.2)."""
    names: set[str] = set()
    for name, value in raw_headers:
        if name.lower() == b"cache-control":
            for item in value.decode("latin-1").split(","):
                names.add(item.split("=", 1)[0].strip().lower())
    return frozenset(names)


# The events an LLM API ends a stream with: OpenAI chat's `data: [DONE]`, Anthropic's
# message_stop, the Responses API's response.completed.
_FINAL_EVENTS = (b"data:[DONE]", b"event:message_stop", b"event:response.completed")


def ends_with_final_event(headers: Sequence[tuple[str, str]], tail: bytes) -> bool:
    """True when an event stream's last bytes (``tail``) close with an API's final event,
    whole (its blank line included)."""
    if not any(n.lower() == "content-type" and v.lower().startswith("text/event-stream") for n, v in headers):
        return False
    ending = tail.replace(b"\r\n", b"\n")
    if not ending.endswith(b"\n\n"):
        return False
    last = ending.rstrip(b"\n").rpartition(b"\n\n")[2]
    # A field's value may or may not follow a space after its colon (WHATWG SSE).
    return any(line.strip().replace(b": ", b":", 1) in _FINAL_EVENTS for line in last.split(b"\n"))


# Events that say a stream failed after its 200 head: OpenAI's and Anthropic's error event, the
# Responses API's response.failed.
_ERROR_EVENTS = (b"error", b"response.failed")
_NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq")


def holds_error_event(headers: Sequence[tuple[str, str]], body: bytes) -> bool:
    """True when ``body`` (its Content-Encoding undone) is an answer that failed after its 200
    head: an event stream (WHATWG SSE) with an ``error`` or ``response.failed`` event, or an
    event whose data (its data lines joined) is a JSON object with a non-null top-level
    "error" or a "type" naming one of those events; newline-delimited JSON (Ollama's streams)
    with such an object on a line; JSON whose top level is such an object, or an array holding
    one (Gemini's streamed array). JSON is read as JSON: escapes in names count. A body that
    cannot be decoded is refused by keep_problem anyway."""
    content_type = next((v.lower() for n, v in headers if n.lower() == "content-type"), "")
    readable = decoded(headers, body)
    if readable is None:
        return False
    if content_type.startswith("text/event-stream"):
        return any(_failed_event(event) for event in readable.replace(b"\r\n", b"\n").split(b"\n\n"))
    if content_type.startswith(_NDJSON_TYPES):
        return any(_failed(_json_of(line)) for line in readable.splitlines())
    if "json" in content_type:
        document = _json_of(readable)
        return _failed(document) or (isinstance(document, list) and any(_failed(item) for item in document))
    return False


def _failed_event(event: bytes) -> bool:
    name = b""
    data: list[bytes] = []
    for raw in event.split(b"\n"):
        field, _, value = raw.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            name = value.strip()
        elif field == b"data":
            data.append(value)
    return name in _ERROR_EVENTS or (bool(data) and _failed(_json_of(b"\n".join(data))))


def _json_of(text: bytes) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _failed(document: object) -> bool:
    """A JSON object that says a failure: a non-null "error", or a "type" of a failure event."""
    return isinstance(document, dict) and (
        document.get("error") not in (None, "", False) or document.get("type") in ("error", "response.failed")
    )


def _tool_keys(request: RecallRequest) -> tuple[str, ...]:
    """The keys the tool sent with ``request`` (credential headers, credential parameters), as
    they would show in an answer echoing them; placeholders ("unused", "sk-x") are not keys."""
    found: set[str] = set()
    for raw_name, raw_value in request.raw_headers:
        if key.is_credential_header(raw_name.decode("latin-1")):
            value = raw_value.decode("latin-1").strip()
            found.update(part for part in (value, value.partition(" ")[2].strip()) if looks_like_key(part))
    for part in request.query.split("&"):
        name, _, value = part.partition("=")
        value = unquote_plus(value)
        if key.is_credential_parameter(unquote_plus(name), value) and looks_like_key(value):
            found.add(value)
    return tuple(found)


def _answers(count: int) -> str:
    return f"{count} answer is" if count == 1 else f"{count} answers are"


class Recordings(AnswerRecall):
    """One per controller, shared by its listeners (see the module docstring)."""

    def __init__(self, path: Path | None = None, settings: Recording | None = None) -> None:
        self.path = path or default_store_path()
        self.settings = settings or Recording()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        # Identical requests in flight in "replay", by base key: their leader (loop only).
        self._leaders: dict[str, AnswerRecorder] = {}
        # Entries hit, to be marked used by the worker (a burst of hits: one write).
        self._touched: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._touch_asked = False
        # The worker thread's own: the store, whether it failed to open, what was logged.
        self._store: RecordingStore | None = None
        self._unusable = False
        self._warned: set[str] = set()

    # On the loop ----------------------------------------------------------------------------

    @property
    def max_bytes(self) -> int:
        return self.settings.max_mib * MIB

    def configure(self, settings: Recording) -> None:
        """On the loop: new settings (a config edit). A lowered cap evicts at once; a store that
        failed to open is tried again."""
        lowered = settings.max_mib < self.settings.max_mib
        self.settings = settings
        self._submit(self._reconfigure, lowered)

    async def lookup(self, request: RecallRequest) -> Replay | Recorder | None:
        """What to do with ``request`` (engine/recall.py). Never raises."""
        try:
            return await self._lookup(request)
        except Exception as exc:  # the proxy must answer whatever the recording does
            self._warn("lookup", "Recorded answers: a lookup failed (%s); answered as a miss", exc)
            return None

    async def _lookup(self, request: RecallRequest) -> Replay | Recorder | None:
        if self._closed or request.mode not in ("record", "replay", "offline"):
            return None
        directives = cache_directives(request.raw_headers)
        if "no-store" in directives:
            return None
        if request.mode == "record" or ("no-cache" in directives and request.mode == "replay"):
            return None if self._unusable else AnswerRecorder(self, request)
        base, found = await self._run(self._find, request)
        if found is not None:
            self._touch_later(found.entry_id)
            return self._replay(found)
        if request.mode == "offline" or self._unusable:
            return None
        leader = self._leaders.get(base)
        if leader is not None:
            head = await leader.wait_head()
            followed = leader.follower() if leader.may_follow(head, request) else None
            return followed or AnswerRecorder(self, request)
        leader = AnswerRecorder(self, request, base=base)
        self._leaders[base] = leader
        return leader

    def _replay(self, found: FoundAnswer) -> Replay:
        paced = self.settings.pace == "recorded"
        return Replay(
            status=found.status,
            reason=found.reason,
            headers=found.headers,
            pieces=_paced(found.pieces) if paced else _back_to_back(found.pieces),
            source="hit",
            head_first=paced and bool(found.pieces) and found.pieces[0][0] > 0,
            length=sum(len(piece) for _, piece in found.pieces),
        )

    def finished(self, leader: AnswerRecorder) -> None:
        """On the loop: ``leader``'s answer is stored or dropped; the next identical request
        looks it up again."""
        if leader.base is not None and self._leaders.get(leader.base) is leader:
            del self._leaders[leader.base]

    def keep(
        self, exchange: RecordedExchange, leader: AnswerRecorder | None, also_secret: tuple[str, ...] = ()
    ) -> None:
        """On the loop: write ``exchange`` in the worker (a leader stays followable until then),
        unless it holds one of ``also_secret`` (keys the tool sent) or a registered one."""
        future = self._submit(self._put, exchange, also_secret)
        if leader is not None:
            if future is None:
                self.finished(leader)
            else:
                future.add_done_callback(lambda _: self.finished(leader))

    def _touch_later(self, entry_id: int) -> None:
        """Mark an entry used soon, with the others hit meanwhile (one write for a burst of
        hits, none between a burst's lookups); the next put marks them first in any case."""
        self._touched.put(entry_id)
        if not self._touch_asked:
            self._touch_asked = True
            asyncio.get_running_loop().call_later(TOUCH_DELAY_S, self._submit, self._touch)

    def _submit(self, job: Callable[..., T], *args: object) -> asyncio.Future[T] | None:
        """Run ``job`` in the worker without waiting: the future on the running loop, None when
        called off a loop (it runs all the same) or closed (nothing runs)."""
        try:
            executor = self._worker()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                executor.submit(job, *args)
                return None
            return loop.run_in_executor(executor, job, *args)
        except RuntimeError:  # closed: the executor refuses new work
            return None

    async def _run(self, job: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker(), job, *args)

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            if self._closed:
                raise RuntimeError("the recording is closed")
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trayproxy-recordings")
        return self._executor

    def close(self) -> None:
        """Stop taking work, wait for the writes already asked for, close the file. From any
        thread (it does not need the loop)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_store)
            executor.shutdown(wait=True)

    # In the worker thread -------------------------------------------------------------------

    def _warn(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    def _open(self) -> RecordingStore | None:
        if self._store is None and not self._unusable:
            try:
                self._store = RecordingStore.open(self.path, busy_timeout_s=WORKER_BUSY_TIMEOUT_S)
            except StoreError as exc:
                self._unusable = True
                self._warn(
                    "open", "Recorded answers are off: %s. Every request is a miss (offline: 504).", exc
                )
        return self._store

    async def explain_miss(self, request: RecallRequest) -> str:
        try:
            return await self._run(self._explain, request)
        except Exception as exc:  # an explanation is a help, never a reason to fail the answer
            log.debug("could not explain a miss: %s", exc)
            return ""

    def _explain(self, request: RecallRequest) -> str:
        store = self._open()
        if store is None:
            return ""
        where = f"{request.method} {request.path}"
        near = store.near(request.target, request.method, request.path)
        if near:
            body = key.canonical_body(request.body)
            query = key.query_without_credentials(request.query)
            same = [entry for entry in near if entry.query == query and key.canonical_body(entry.request_body) == body]
            if not same:
                return (
                    f"{_answers(len(near))} recorded for {where} on this target, none with this body"
                    " and query (another prompt, model or parameter)"
                )
            sent = dict(key.key_headers(key.request_headers(request.raw_headers)))
            recorded = dict(same[0].request_headers)
            differing = [
                f"{name} {recorded.get(name)!r} where this request sent {sent.get(name)!r}"
                for name in sorted(set(sent) | set(recorded))
                if sent.get(name) != recorded.get(name)
            ]
            if differing:
                return f"recorded with other headers: {'; '.join(differing[:3])}"
            return "recorded for other values of the headers its answer varies on (Vary)"
        counts = store.answers_per_target()
        if not counts:
            return "nothing is recorded yet"
        if request.target not in counts:
            recorded_targets = ", ".join(f"{name} ({count})" for name, count in sorted(counts.items())[:5])
            return f"nothing is recorded for this target; recorded targets: {recorded_targets}"
        return f"nothing is recorded for {where} on this target"

    def _find(self, request: RecallRequest) -> tuple[str, FoundAnswer | None]:
        headers = key.request_headers(request.raw_headers)
        base = key.base_key(
            request.target, request.method, request.path, request.query, request.body, headers
        )
        store = self._open()
        if store is None:
            return base, None
        try:
            return base, store.find(base, headers)
        except (sqlite3.Error, ValueError) as exc:
            self._warn(
                "read",
                "Recorded answers: the recording %s cannot be read (%s); answered as a miss",
                self.path,
                exc,
            )
            return base, None

    def _used(self) -> set[int]:
        """The entries hit since the last call."""
        entry_ids: set[int] = set()
        with contextlib.suppress(queue.Empty):
            while True:
                entry_ids.add(self._touched.get_nowait())
        return entry_ids

    def _touch(self) -> None:
        # Cleared before the queue is read: a hit queued after this is read now, or asks again.
        self._touch_asked = False
        entry_ids = self._used()
        store = self._open()
        if store is not None and entry_ids:
            try:
                store.touch(entry_ids)
            except sqlite3.Error as exc:
                self._warn("write", "Recorded answers: cannot write to %s (%s)", self.path, exc)

    def _put(self, exchange: RecordedExchange, also_secret: tuple[str, ...] = ()) -> bool:
        why = keep_problem(exchange, also_secret)
        if why is None and holds_error_event(exchange.response_headers, b"".join(piece for _, piece in exchange.pieces)):
            why = "it holds an error event"
        if why is not None:
            # Decided after the access line was written (it said miss or record): said here.
            log.info(
                "Recorded answers: not kept: %s %s on %s: %s",
                exchange.method,
                redact_target(exchange.path),
                exchange.target,
                why,
            )
            return False
        store = self._open()
        if store is None:
            return False
        try:
            return store.put(exchange, max_bytes=self.max_bytes, used=self._used(), checked=True)
        except sqlite3.Error as exc:
            self._warn(
                "write", "Recorded answers: cannot write to %s (%s); this answer is not kept", self.path, exc
            )
            return False

    def _reconfigure(self, lowered: bool) -> None:
        self._unusable = False
        self._warned.discard("open")
        store = self._open()
        if lowered and store is not None:
            try:
                store.trim(self.max_bytes)
            except sqlite3.Error as exc:
                self._warn("write", "Recorded answers: cannot write to %s (%s)", self.path, exc)

    def _close_store(self) -> None:
        if self._store is not None:
            self._touch()
            self._store.close()
            self._store = None


async def _back_to_back(pieces: Sequence[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    for _, piece in pieces:
        yield piece


async def _paced(pieces: Sequence[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    """Each piece at its recorded seconds after the first is asked for (the head's going)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for offset, piece in pieces:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield piece


class AnswerRecorder:
    """Told of one answer as the client gets it (capture.py's calls, on the loop, each at
    once); keeps it if it ends cleanly. A leader (``base`` given) also lets identical requests
    follow its pieces as they arrive."""

    def __init__(self, recordings: Recordings, request: RecallRequest, *, base: str | None = None) -> None:
        self._recordings = recordings
        self._request = request
        self.base = base
        self._head: Head | None = None
        self._head_at = 0.0
        self._pieces: list[tuple[float, bytes]] = []
        self._bytes = 0
        self._keepable = True
        self._unkeepable = ""  # why it cannot be kept, once known before the end
        self._ended = False
        self._cut = False
        self._followed = False
        self._dropped = False  # pieces were let go (not kept, nobody following)
        # Once the answer will not be kept, only what the followers have yet to read is held:
        # ``_pieces`` starts at piece ``_base``; each follower's next piece is in ``_positions``.
        self._base = 0
        self._held = 0  # bytes in _pieces
        self._positions: dict[object, int] = {}
        self._lagging: set[object] = set()  # followers cut for lagging too far behind
        # A leader's: its head for the followers (None: no head, or not a success), and a new
        # event each time a piece arrives or the answer ends.
        loop = asyncio.get_running_loop()
        self._head_known: asyncio.Future[Head | None] | None = (
            loop.create_future() if base is not None else None
        )
        self._arrived = asyncio.Event()

    # Capture calls (engine/capture.py) ------------------------------------------------------

    def request_body(self, body: bytes) -> None:
        """The body is the RecallRequest's already."""

    def request_piece(self, piece: bytes) -> None:
        """Never: a body that cannot be held is never recorded."""
        self._not_keepable("its request body was streamed")

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        kept = tuple(
            (name, value)
            for name, value in headers.items()
            if not key.is_credential_header(name) and name.lower() not in HOP_BY_HOP
        )
        self._head = (status, reason, kept)
        self._head_at = at
        if not 200 <= status <= 299 or status == 206:
            self._not_keepable(f"the target answered {status}")
        elif coding := unreadable_coding(kept):
            self._not_keepable(f"it is compressed as {coding}, which TrayProxy cannot read to check it holds no key")
        self._tell_head(self._head)

    def chunk(self, data: bytes, at: float) -> None:
        if not data:
            return
        self._bytes += len(data)
        if self._bytes > MAX_ANSWER_BYTES and self._keepable:
            self._not_keepable(f"the answer is over {MAX_ANSWER_BYTES // MIB} MiB")
            self._recordings.finished(self)  # no new followers: this one is not kept
        if self._keepable or self._positions:
            self._pieces.append((max(0.0, at - self._head_at), data))
            self._held += len(data)
            self._trim()
        else:
            self._pieces.clear()
            self._held = 0
            self._dropped = True
        self._wake()

    def _trim(self) -> None:
        """Let go of what every follower has read, once the answer will not be kept; a follower
        lagging more than MAX_ANSWER_BYTES behind is cut (its tool asks afresh), so memory is
        bounded by the followers' lag, not by the answer's size."""
        if self._keepable:
            return
        while True:
            low = min(self._positions.values(), default=self._base + len(self._pieces))
            if low > self._base:
                gone = self._pieces[: low - self._base]
                del self._pieces[: low - self._base]
                self._held -= sum(len(piece) for _, piece in gone)
                self._base = low
            if self._held <= MAX_ANSWER_BYTES or not self._positions:
                return
            slowest = min(self._positions, key=self._positions.__getitem__)
            del self._positions[slowest]
            self._lagging.add(slowest)

    def message(self, to_target: bool, size: int, at: float) -> None:
        self._not_keepable("it is a WebSocket")

    def _not_keepable(self, why: str) -> None:
        if self._keepable:
            self._keepable, self._unkeepable = False, why

    def _is_cut(self, end: ExchangeEnd) -> bool:
        # A tool may hang up the moment it has read a stream's final event (the openai SDK
        # closes after `data: [DONE]`), before the target's end of body: the answer is whole.
        return end.note != "" and not (
            end.note == "client went away"
            and self._head is not None
            and ends_with_final_event(self._head[2], self._tail())
        )

    def declines(self, end: ExchangeEnd) -> str:
        if not self._keepable:
            return self._unkeepable
        if self._head is None:
            return "no answer came"
        if self._is_cut(end):
            if end.note == "client went away":
                return "the tool hung up before the answer's end"
            return f"the answer did not end cleanly ({end.note})"
        # Answered by another target than the one asked (a fallback, after the first failed):
        # whole, for whoever follows it, but not the first target's answer to keep.
        label = self._request.label
        if label and end.target != label:
            return f"{end.target or 'another target'} answered, not {label}"
        if key.vary_names(self._head[2]) is None:
            return "the answer says Vary: *"
        return ""

    def end(self, end: ExchangeEnd) -> None:
        self._ended = True
        self._cut = self._is_cut(end)
        declined = self.declines(end)
        self._tell_head(None)
        self._wake()
        exchange = None if declined else self._exchange()
        if exchange is None:
            self._recordings.finished(self)
            if not self._followed:
                self._pieces.clear()
                self._dropped = True
            return
        self._recordings.keep(exchange, self if self.base is not None else None, _tool_keys(self._request))

    def _tail(self, size: int = 4096) -> bytes:
        """The last ``size`` bytes or so of the answer kept so far."""
        picked: list[bytes] = []
        total = 0
        for _, piece in reversed(self._pieces):
            picked.append(piece)
            total += len(piece)
            if total >= size:
                break
        return b"".join(reversed(picked))

    def _exchange(self) -> RecordedExchange | None:
        if self._head is None:
            return None
        status, reason, response_headers = self._head
        names = key.vary_names(response_headers)
        if names is None:  # Vary: * (RFC 9110 §12.5.5)
            return None
        request = self._request
        headers = key.request_headers(request.raw_headers)
        return RecordedExchange(
            target=request.target,
            method=request.method,
            path=request.path,
            query=key.query_without_credentials(request.query),
            request_headers=key.key_headers(headers),
            request_body=request.body,
            vary=key.vary_of(names, headers),
            status=status,
            reason=reason,
            response_headers=response_headers,
            pieces=tuple(self._pieces),
            recorded_at=time.time(),
        )

    # Followers ------------------------------------------------------------------------------

    def _tell_head(self, head: Head | None) -> None:
        if self._head_known is not None and not self._head_known.done():
            self._head_known.set_result(head)

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def wait_head(self) -> Head | None:
        """The leader's head once it comes (None: it ended without one, or took too long)."""
        if self._head_known is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(self._head_known), FOLLOW_HEAD_WAIT_S)
        except TimeoutError:
            return None

    def may_follow(self, head: Head | None, request: RecallRequest) -> bool:
        """True when ``request`` (of this leader's base key) may follow its answer: ``head`` is
        a 2xx whose Vary names no header ``request`` sent with another value (the base key
        leaves those out; a lookup in the store compares them, and so must following)."""
        if head is None or not 200 <= head[0] <= 299:
            return False
        names = key.vary_names(head[2])
        if names is None:  # Vary: *: the answer is this request's alone
            return False
        leaders = key.request_headers(self._request.raw_headers)
        return key.matches_vary(key.vary_of(names, leaders), key.request_headers(request.raw_headers))

    def follower(self) -> Replay | None:
        """A Replay of this answer, its pieces as they arrive (call once the head is a 2xx);
        None when its pieces are gone already (it ended, not kept, before anyone followed)."""
        if self._head is None or self._dropped or self._base:
            return None
        self._followed = True
        me = object()
        self._positions[me] = 0  # from now: the pieces it has yet to read are held for it
        status, reason, headers = self._head
        return Replay(
            status=status,
            reason=reason,
            headers=headers,
            pieces=self._follow(me),
            source="follow",
            head_first=True,
        )

    async def _follow(self, me: object) -> AsyncIterator[bytes]:
        sent = 0
        try:
            while True:
                arrived = self._arrived
                if me in self._lagging:
                    raise ConnectionResetError(
                        f"this client lagged over {MAX_ANSWER_BYTES // MIB} MiB behind the answer it followed"
                    )
                if sent < self._base + len(self._pieces):
                    piece = self._pieces[sent - self._base][1]
                    sent += 1
                    self._positions[me] = sent
                    self._trim()
                    yield piece
                elif self._ended:
                    if self._cut:
                        raise ConnectionResetError("the answer being followed was cut")
                    return
                else:
                    await arrived.wait()
        finally:
            self._positions.pop(me, None)
            self._lagging.discard(me)
            self._trim()
