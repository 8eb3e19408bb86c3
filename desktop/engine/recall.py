"""What the engine asks of a recording of answers (the opt-in request cache), and nothing more.

A target whose ``cache`` mode is not "off" has its requests looked up before they are sent: the
engine holds the body (a request that cannot be held is never recorded), works out the route,
then asks ``AnswerRecall.lookup`` with a ``RecallRequest``. What comes back says what to do:

- a ``Replay``: answer from the recording (stored, or one being recorded right now by an
  identical request: its pieces follow as they arrive), the target is not contacted;
- a ``Recorder``: send the request as usual and tell the recorder of the answer, exactly as the
  inspector's capture is told (capture.py); it keeps the answer if it ends cleanly;
- None: nothing recorded and nothing to record (in "offline" mode the engine then answers 504
  cache_offline_miss itself, without contacting the target or its fallbacks).

The store, the key, pacing and the on-disk format live in ``desktop.cache`` (which implements
this); the engine imports nothing of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from desktop.engine.capture import ExchangeCapture, ExchangeEnd

__all__ = ["CACHE_MODES", "AnswerRecall", "CacheMode", "RecallRequest", "Recorder", "Replay"]

CacheMode = Literal["off", "record", "replay", "offline"]
CACHE_MODES: tuple[CacheMode, ...] = ("off", "record", "replay", "offline")


@dataclass(frozen=True, slots=True)
class RecallRequest:
    """A request as the recording keys it: as the client sent it, routed but not yet rewritten."""

    mode: CacheMode  # the first target's mode: "record", "replay" or "offline"
    target: str  # the route's first target (its name, or its URL when it has none)
    method: str
    path: str  # the client's raw path, a route's prefix cut (a model in it not renamed); no query
    query: str  # the raw query, without "?"
    body: bytes  # the held body as the client sent it (before a model rename); b"" when none
    raw_headers: tuple[tuple[bytes, bytes], ...]  # the client's, credentials included: pick, never keep
    # The first target as ExchangeEnd.target names whoever answered: an answer another target
    # gave (a fallback, after the first failed) is not the first target's, and is not kept.
    label: str = ""


@dataclass(slots=True)
class Replay:
    """An answer from the recording: the head the target sent, then its body piece by piece,
    each with the seconds after the head it came (``pieces`` paces them or not, as set)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    # Yields each piece when it is due. Raises ConnectionResetError when a recording being
    # followed was cut (the client is then cut too, as the recording's own client was).
    pieces: AsyncIterator[bytes]
    # "hit" (stored), "follow" (an identical request's answer arriving now)
    source: str = "hit"
    # Send the head at once instead of with the first piece: when that piece is not due yet
    # (paced as recorded, or still on its way to the request being followed).
    head_first: bool = False
    # The body's length when known before it is sent (a stored answer); None for one followed.
    length: int | None = None


class Recorder(ExchangeCapture, Protocol):
    """Told of the answer as the client gets it (capture.py's calls); keeps it on a clean end."""

    def declines(self, end: ExchangeEnd) -> str:
        """Why an answer that ends as ``end`` says will not be kept, in a few words ("the
        target answered 429"); "" when it will be written (the store may still refuse it: an
        error event, a key in it)."""
        ...


class AnswerRecall(Protocol):
    """The recording the listeners share."""

    async def lookup(self, request: RecallRequest) -> Replay | Recorder | None:
        """What to do with ``request`` (see the module's docstring). Never raises: a store that
        cannot be read is a miss (logged)."""
        ...

    async def explain_miss(self, request: RecallRequest) -> str:
        """Why nothing recorded answers ``request`` (an offline miss), in a few words a person
        can act on: what is recorded for its path or its target instead ("" when unknown)."""
        ...
