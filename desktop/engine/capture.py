"""The capture tap: each request's life told, as it happens, to whoever listens.

The engine announces; observers decide (the inspector lists and keeps, a later request cache
records). One ``CaptureTap`` is given to a service; for each request it may hand back an
``ExchangeCapture`` (None: this request is not watched). The engine then calls it on the loop,
in order: ``request_body`` (a held body, once) or ``request_piece`` (each piece of one
streamed to the target), ``response`` (the head the client gets, when the
target's head came in), ``chunk`` for each piece of the body as it goes to the client, then
``end``. A WebSocket gets ``message`` for each message relayed instead of chunks.

Nothing is copied for an observer: ``bytes`` are immutable, so the piece the client was sent is
the piece handed over. Every call must return at once and never raise; parsing belongs off the
forwarding path (the inspector reads a stream back only when asked). No file I/O here either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

__all__ = ["CaptureTap", "ExchangeCapture", "ExchangeEnd", "RequestHead", "WebSocketTally"]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request as the client sent it, before anything was added: ``raw_headers`` may hold the
    client's own credentials (an observer masks them before a person sees them)."""

    method: str
    raw_path: str
    version: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    port: int  # the listener's port
    websocket: bool
    started: float  # loop time


@dataclass(slots=True)
class WebSocketTally:
    """A relayed WebSocket's messages and bytes each way, and how it closed."""

    messages_up: int = 0  # client -> target
    messages_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    close_code: int | None = None
    closed_by: str = ""  # "client", "target", "proxy"


@dataclass(frozen=True, slots=True)
class ExchangeEnd:
    """How a request ended, as the access line tells it."""

    status: int
    note: str  # why it ended unusually ("client went away", a refusal's code); "" when fine
    error: str  # the proxy's own message when it answered instead of the target
    target: str  # the target that answered (its label); "" when none did
    chosen_by: str  # with routes: the route that chose ("model:claude-*")
    attempts: Sequence[str]  # with routes: each target tried and its answer ("anthropic 529")
    bytes_down: int
    own_body: bytes | None  # the proxy's own answer (an error's JSON), when it gave one
    websocket: WebSocketTally | None
    ended: float  # loop time
    # What the recording of answers did (RequestRecord.cache): "hit", "miss", "record",
    # "offline-miss", "bypass", "unkept"; "" when it was not used.
    cache: str = ""
    cache_note: str = ""  # "unkept": why the answer is not kept ("the target answered 429")


class ExchangeCapture(Protocol):
    """One request, watched: each call returns at once and never raises."""

    def request_body(self, body: bytes) -> None:
        """The request body held before sending, whole."""

    def request_piece(self, piece: bytes) -> None:
        """A piece of a request body streamed to the target as it arrives (over 1 MiB, or of
        no stated length), in order."""

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        """The response head the client gets, ``at`` the loop time the target's head came in.
        ``headers`` belongs to the response being sent: read it, do not change it."""

    def chunk(self, data: bytes, at: float) -> None:
        """A piece of the response body, ``at`` the loop time it came from the target."""

    def message(self, to_target: bool, size: int, at: float) -> None:
        """A WebSocket message relayed (``to_target``: from the client)."""

    def end(self, end: ExchangeEnd) -> None:
        """The request is over; no more calls follow."""


class CaptureTap(Protocol):
    """What a service tells of every request it serves."""

    def begin(self, head: RequestHead) -> ExchangeCapture | None:
        """A request arrived (its head only); return the capture to tell the rest, or None."""
