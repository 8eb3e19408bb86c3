"""What passed through, kept for the inspector: a bounded list of exchanges, bodies in a ring.

The store is the engine's capture tap (engine/capture.py): it hears of each request as it
happens and keeps it as an :class:`Exchange`. It holds what it is told, as told: raw headers
(credentials and all, masked only when shown: views.py) and the very ``bytes`` the client was
sent, never copied.

Bounds, so an open inspector cannot eat the machine (mitmproxy and others grow until they burst):
- at most ``max_rows`` exchanges (oldest dropped first), and refusals of the guard in a small
  list of their own, so a hostile page's flood of refused requests cannot push real ones out;
- bodies, request and response, in a ring of ``body_cap_bytes`` in all: the oldest exchange's
  bodies are dropped first (its row stays, marked evicted);
- one exchange's body cut at ``request_cap_bytes`` (and marked cut).
Each kept piece counts its bytes plus PIECE_OVERHEAD, so a stream of tiny pieces is bounded too.

With ``keep_bodies`` off only metadata stays: pieces are held until the exchange ends (to read
its model, tokens and time to first token), then dropped.

All on the event loop that serves the requests (the controller's thread): nothing here locks.
Subscribers (the page's push stream) are told each exchange that started, changed or ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from multidict import CIMultiDict

from desktop.engine.capture import ExchangeEnd, RequestHead

__all__ = [
    "DEFAULT_BODY_CAP_BYTES",
    "DEFAULT_MAX_ROWS",
    "Exchange",
    "Gone",
    "InspectorStore",
    "Subscription",
]

log = logging.getLogger("trayproxy.inspector")

DEFAULT_MAX_ROWS = 10_000
DEFAULT_BODY_CAP_BYTES = 64 * 1024 * 1024
# The most of one exchange's bodies kept: a 1 GiB download must not flush every other body.
DEFAULT_REQUEST_CAP_BYTES = 8 * 1024 * 1024
# Refusals of the guard kept (a page hammering the proxy makes thousands; a person needs to see
# that it happens and from where, not each one).
MAX_REFUSAL_ROWS = 200
# What a kept piece costs besides its bytes (the bytes object, its time, the list slots).
PIECE_OVERHEAD = 96
# A push subscriber that falls this far behind is told to read the list again instead.
SUBSCRIBER_BACKLOG = 1000


# A RequestHead's and an ExchangeEnd's fields as a plain tuple, in order (their objects are
# not copied: bytes and strings never change).
_head_fields: Callable[[RequestHead], tuple[Any, ...]] = attrgetter(
    *(field.name for field in fields(RequestHead))
)
_end_fields: Callable[[ExchangeEnd], tuple[Any, ...]] = attrgetter(
    *(field.name for field in fields(ExchangeEnd))
)


@dataclass(slots=True, eq=False)
class Exchange:
    """One request and its answer, as far as it has come.

    Made with ``Exchange.of``. Its ``head`` and ``end`` are kept as plain tuples of their
    fields: thousands of rows are held, and a plain tuple of strings, bytes and numbers is an
    object the garbage collector stops walking (a class instance, or a named tuple, never is),
    which keeps its full passes short under load. Each row is then one object it walks."""

    id: int
    wall_started: float  # seconds since the epoch, for display
    head_fields: tuple[Any, ...]  # RequestHead's, in order
    request_body: bytes | None = None  # the request body (cut at the cap), when kept
    # A request body streamed to the target, as its pieces came (joined at the end).
    # Lists while pieces arrive, tuples (or empty) once the exchange is over: thousands of rows
    # are held, and a tuple of bytes or floats is one object the garbage collector no longer
    # walks (a list always is), which keeps its full passes short under load.
    request_pieces: list[bytes] | tuple[bytes, ...] = ()
    request_body_cut: bool = False
    status: int = 0
    reason: str = ""
    # The response's own headers while it is sent; their pairs once it is over (as above).
    response_headers: CIMultiDict[str] | tuple[tuple[str, str], ...] | None = None
    response_at: float | None = None  # loop time the target's head came in
    chunks: list[bytes] | tuple[bytes, ...] = ()
    chunk_times: list[float] | tuple[float, ...] = ()
    response_bytes: int = 0  # all that passed, kept or not
    body_cut: bool = False  # the response body passed its cap: what is kept is its start
    evicted: bool = False  # the bodies were dropped to make room for newer ones
    kept_bytes: int = 0  # what this exchange's bodies count against the ring
    ws_messages_up: int = 0
    ws_messages_down: int = 0
    ws_bytes_up: int = 0
    ws_bytes_down: int = 0
    end_fields: tuple[Any, ...] | None = None  # ExchangeEnd's, in order; None while open
    # What reading the answer back found (model, tokens, time to first token): filled by the
    # reader the store is given, after the exchange ended, off the forwarding path.
    facts: dict[str, object] | None = None
    facts_read: bool = False  # read back already (or nothing to read)

    @classmethod
    def of(cls, id: int, wall_started: float, head: RequestHead, **values: Any) -> Exchange:
        return cls(id, wall_started, _head_fields(head), **values)

    @property
    def head(self) -> RequestHead:
        return RequestHead(*self.head_fields)

    @property
    def end(self) -> ExchangeEnd | None:
        fields = self.end_fields
        return None if fields is None else ExchangeEnd(*fields)

    @end.setter
    def end(self, end: ExchangeEnd | None) -> None:
        self.end_fields = None if end is None else _end_fields(end)

    @property
    def done(self) -> bool:
        return self.end_fields is not None

    def response_body(self) -> bytes:
        """The kept response body (joined when asked, not as it passes)."""
        return b"".join(self.chunks)

    def response_header(self, name: str) -> str:
        """A header of the response the client got ("" when none, or no response yet)."""
        headers = self.response_headers
        if headers is None:
            return ""
        if isinstance(headers, CIMultiDict):
            return headers.get(name, "")
        wanted = name.lower()
        return next((value for key, value in headers if key.lower() == wanted), "")

    def response_header_pairs(self) -> list[tuple[str, str]]:
        """The response's headers in order, as the client got them."""
        headers = self.response_headers
        if headers is None:
            return []
        return list(headers.items()) if isinstance(headers, CIMultiDict) else list(headers)

    def settle(self) -> None:
        """The exchange is over: what it holds becomes the forms the collector skips."""
        if isinstance(self.chunks, list):
            self.chunks = tuple(self.chunks)
            self.chunk_times = tuple(self.chunk_times)
        if isinstance(self.response_headers, CIMultiDict):
            self.response_headers = tuple(self.response_headers.items())


@dataclass(frozen=True, slots=True)
class Gone:
    """Told to a subscriber that asked for removals: this exchange is no longer held (pushed
    out by newer ones: max_rows, or the refusals' short list)."""

    exchange_id: int


class Subscription:
    """A push subscriber's queue of changed exchanges; ``None`` means "read the list again"
    (it fell behind, or the list was cleared). With ``removals``, a :class:`Gone` too for
    each exchange pushed out of the list."""

    def __init__(self, store: InspectorStore, *, removals: bool = False) -> None:
        self._store = store
        self.removals = removals
        self.queue: asyncio.Queue[Exchange | Gone | None] = asyncio.Queue()

    def tell(self, exchange: Exchange | Gone | None) -> None:
        queue = self.queue
        if exchange is not None and queue.qsize() >= SUBSCRIBER_BACKLOG:
            while not queue.empty():
                queue.get_nowait()
            exchange = None
        queue.put_nowait(exchange)

    def close(self) -> None:
        self._store._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Capture:
    """The engine's handle on one exchange (engine/capture.py's ExchangeCapture)."""

    __slots__ = ("exchange", "store")

    def __init__(self, store: InspectorStore, exchange: Exchange) -> None:
        self.store = store
        self.exchange = exchange

    def request_body(self, body: bytes) -> None:
        self.store._keep_request_body(self.exchange, body)

    def request_piece(self, piece: bytes) -> None:
        self.store._keep_request_piece(self.exchange, piece)

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        exchange = self.exchange
        exchange.status = status
        exchange.reason = reason
        exchange.response_headers = headers
        exchange.response_at = at
        self.store._changed(exchange)

    def chunk(self, data: bytes, at: float) -> None:
        exchange = self.exchange
        exchange.response_bytes += len(data)
        if exchange.body_cut or exchange.evicted:
            return
        store = self.store
        cost = len(data) + PIECE_OVERHEAD
        if exchange.kept_bytes + cost > store.request_cap_bytes:
            room = store.request_cap_bytes - exchange.kept_bytes - PIECE_OVERHEAD
            exchange.body_cut = True
            if room <= 0:
                return
            data = data[:room]  # the one copy: the cut piece
            cost = room + PIECE_OVERHEAD
        chunks, times = exchange.chunks, exchange.chunk_times
        if isinstance(chunks, list) and isinstance(times, list):
            chunks.append(data)
            times.append(at)
        else:  # the first piece
            exchange.chunks, exchange.chunk_times = [data], [at]
        store._count(exchange, cost)

    def message(self, to_target: bool, size: int, at: float) -> None:
        exchange = self.exchange
        if to_target:
            exchange.ws_messages_up += 1
            exchange.ws_bytes_up += size
        else:
            exchange.ws_messages_down += 1
            exchange.ws_bytes_down += size

    def end(self, end: ExchangeEnd) -> None:
        self.store._ended(self.exchange, end)


class InspectorStore:
    """Exchanges newest last, bounded as the module says; the engine's capture tap."""

    def __init__(
        self,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        body_cap_bytes: int = DEFAULT_BODY_CAP_BYTES,
        request_cap_bytes: int = DEFAULT_REQUEST_CAP_BYTES,
        keep_bodies: bool = True,
        read_back: Callable[[Exchange], dict[str, object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``read_back`` reads an ended exchange's answer for its facts (model, tokens, time to
        first token), once per exchange, on the loop: right after it ended while a page listens,
        else when the list is first read or its bodies are evicted (a row pushed out of the
        list unread is never read back: under a flood of requests nobody looks at, nothing is)."""
        self.max_rows = max_rows
        self.body_cap_bytes = body_cap_bytes
        self._request_cap_wanted = request_cap_bytes
        self.request_cap_bytes = min(request_cap_bytes, body_cap_bytes)
        self.keep_bodies = keep_bodies
        self._read_back = read_back
        self._clock = clock
        self._ids = itertools.count(1)
        self._rows: OrderedDict[int, Exchange] = OrderedDict()
        self._refusals: deque[Exchange] = deque(maxlen=MAX_REFUSAL_ROWS)
        # Exchanges holding body bytes, oldest first, and what they hold in all.
        self._with_bodies: OrderedDict[int, Exchange] = OrderedDict()
        self.body_bytes = 0
        self._subscribers: set[Subscription] = set()

    def configure(self, *, max_rows: int, body_cap_bytes: int, keep_bodies: bool) -> None:
        """New bounds from the next exchange on; what is held now is trimmed to them."""
        self.max_rows = max_rows
        self.body_cap_bytes = body_cap_bytes
        self.request_cap_bytes = min(self._request_cap_wanted, body_cap_bytes)
        self.keep_bodies = keep_bodies
        if not keep_bodies:
            for exchange in list(self._with_bodies.values()):
                if exchange.done:
                    self._drop_bodies(exchange)
        self._trim_rows()
        self._evict(0)

    # The capture tap ------------------------------------------------------------------------

    def begin(self, head: RequestHead) -> _Capture:
        exchange = Exchange.of(next(self._ids), self._clock(), head)
        # Listed now, trimmed to max_rows when it ends: only then is it known whether it is a
        # refusal, which must not push a real row out.
        self._rows[exchange.id] = exchange
        self._changed(exchange)
        return _Capture(self, exchange)

    def _keep_request_body(self, exchange: Exchange, body: bytes) -> None:
        if not self.keep_bodies or exchange.evicted:
            return
        room = self.request_cap_bytes - PIECE_OVERHEAD  # its own cost within the cap
        if len(body) > room:
            body = body[: max(room, 0)]
            exchange.request_body_cut = True
        exchange.request_body = body
        self._count(exchange, len(body) + PIECE_OVERHEAD)

    def _keep_request_piece(self, exchange: Exchange, piece: bytes) -> None:
        if not self.keep_bodies or exchange.evicted or exchange.request_body_cut:
            return
        room = self.request_cap_bytes - exchange.kept_bytes - PIECE_OVERHEAD
        if len(piece) > room:
            exchange.request_body_cut = True
            if room <= 0:
                return
            piece = piece[:room]
        pieces = exchange.request_pieces
        if isinstance(pieces, list):
            pieces.append(piece)
        else:  # the first
            exchange.request_pieces = [piece]
        self._count(exchange, len(piece) + PIECE_OVERHEAD)

    def _count(self, exchange: Exchange, cost: int) -> None:
        exchange.kept_bytes += cost
        self.body_bytes += cost
        self._with_bodies[exchange.id] = exchange
        if self.body_bytes > self.body_cap_bytes:
            self._evict(0)

    def _ended(self, exchange: Exchange, end: ExchangeEnd) -> None:
        exchange.end = end
        if exchange.request_pieces:
            exchange.request_body = b"".join(exchange.request_pieces)
            exchange.request_pieces = ()
        exchange.settle()
        if not end.target and 200 <= end.status < 500 and exchange.id in self._rows:
            # Answered by the proxy itself, no target asked: refused (the guard, the local
            # token, a malformed request) or a CORS preflight it answers with the local token
            # on. Moved to the refusals' own short list, so a page's flood of them cannot push
            # real rows out.
            del self._rows[exchange.id]
            self._drop_bodies(exchange)
            if len(self._refusals) == self._refusals.maxlen:
                self._gone(self._refusals[0])  # the oldest, pushed out by this one
            self._refusals.append(exchange)
        else:
            self._trim_rows()
        if (
            self._read_back is not None
            and exchange.response_bytes
            and (self._subscribers or not self.keep_bodies)
        ):
            asyncio.get_running_loop().call_soon(self._read_back_then_tell, exchange)
        else:
            self._settle(exchange)

    def _read_back_then_tell(self, exchange: Exchange) -> None:
        self._read_facts(exchange)
        self._settle(exchange)

    def _read_facts(self, exchange: Exchange) -> None:
        """Read ``exchange``'s answer back for its facts, once, if it has ended."""
        if exchange.facts_read or exchange.end is None:
            return
        exchange.facts_read = True
        if self._read_back is None or not exchange.response_bytes:
            return
        try:
            exchange.facts = self._read_back(exchange)
        except Exception:
            log.exception("reading back exchange %d failed", exchange.id)

    def _settle(self, exchange: Exchange) -> None:
        if not self.keep_bodies:
            self._drop_bodies(exchange)
        self._changed(exchange)

    # Bounds -----------------------------------------------------------------------------------

    def _trim_rows(self) -> None:
        while len(self._rows) > self.max_rows:
            _, oldest = self._rows.popitem(last=False)
            # Evicted: one still open stops keeping pieces for a row nobody lists any more.
            self._drop_bodies(oldest, evicted=True)
            self._gone(oldest)

    def _evict(self, room: int) -> None:
        """Drop the oldest bodies until ``room`` more bytes fit under the cap."""
        while self._with_bodies and self.body_bytes + room > self.body_cap_bytes:
            _, oldest = self._with_bodies.popitem(last=False)
            self._read_facts(oldest)  # still listed: its tokens must outlive its bodies
            self._drop_bodies(oldest, evicted=True)

    def _drop_bodies(self, exchange: Exchange, *, evicted: bool = False) -> None:
        self._with_bodies.pop(exchange.id, None)
        self.body_bytes -= exchange.kept_bytes
        exchange.kept_bytes = 0
        exchange.chunks = ()
        exchange.chunk_times = ()
        exchange.request_body = None
        exchange.request_pieces = ()
        if evicted:
            exchange.evicted = True

    # Reading ------------------------------------------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        """Every exchange held, refusals included, newest first."""
        merged = [*self._rows.values(), *self._refusals]
        merged.sort(key=lambda exchange: exchange.id, reverse=True)
        for exchange in merged:
            self._read_facts(exchange)  # a no-op but the first time
        return merged

    def __len__(self) -> int:
        return len(self._rows) + len(self._refusals)

    def get(self, exchange_id: int) -> Exchange | None:
        found = self._rows.get(exchange_id)
        if found is None:
            found = next((exchange for exchange in self._refusals if exchange.id == exchange_id), None)
        if found is not None:
            self._read_facts(found)
        return found

    def clear(self) -> None:
        """Forget everything held (the page's Clear button); subscribers read the list again.
        Exchanges still open carry on, unlisted, and drop what they would keep."""
        for exchange in list(self._with_bodies.values()):
            self._drop_bodies(exchange)
        for exchange in self._rows.values():
            exchange.evicted = True  # an open one keeps nothing more
        self._rows.clear()
        self._refusals.clear()
        self.body_bytes = 0
        for subscriber in list(self._subscribers):
            subscriber.tell(None)

    def subscribe(self, *, removals: bool = False) -> Subscription:
        """A queue told of each exchange that starts, changes or ends from now on; with
        ``removals``, also of each one pushed out of the list (a :class:`Gone`)."""
        subscription = Subscription(self, removals=removals)
        self._subscribers.add(subscription)
        return subscription

    def _changed(self, exchange: Exchange) -> None:
        if not self._subscribers:
            return  # no page open: nothing to tell (the common case, on every request)
        if self._rows.get(exchange.id) is not exchange and exchange not in self._refusals:
            return  # cleared while it was open
        for subscriber in self._subscribers:
            subscriber.tell(exchange)

    def _gone(self, exchange: Exchange) -> None:
        for subscriber in self._subscribers:
            if subscriber.removals:
                subscriber.tell(Gone(exchange.id))
