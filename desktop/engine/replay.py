"""A recorded answer sent to the client, and the request a recording is asked about.

The recording itself (the key, the store, pacing) is desktop.cache's; recall.py is what the
engine asks of it. Here: which requests may be looked up at all, the ``RecallRequest`` for one,
writing a ``Replay`` as the target's own answer would have gone (its headers as recorded, each
piece as its own write, the inspector told as for a forwarded answer), the 504 of an offline
miss, and the capture that tells both the inspector and a recorder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import cast

from aiohttp import web
from multidict import CIMultiDict

from desktop.engine.capture import ExchangeCapture, ExchangeEnd
from desktop.engine.errors import ProxyError
from desktop.engine.forward import REPLAYABLE_BODY_BYTES, PassThroughResponse, RequestRecord
from desktop.engine.headers import HOP_BY_HOP
from desktop.engine.recall import CacheMode, RecallRequest, Recorder, Replay
from desktop.redaction import redact_target

__all__ = [
    "WEBSOCKET_UNRECORDED",
    "BothCaptures",
    "client_path",
    "offline_miss",
    "recall_request",
    "send_replay",
    "unrecordable_reason",
]

# Why an offline target refuses a WebSocket upgrade: it is never recorded, so never replayed.
WEBSOCKET_UNRECORDED = "it is a WebSocket, and WebSockets are never recorded"


def unrecordable_reason(request: web.BaseRequest) -> str | None:
    """Why ``request`` can be neither looked up nor recorded (its body cannot be held: of no
    stated length, or over 1 MiB), or None when it can."""
    if not request.body_exists:
        return None
    length = request.content_length
    if length is None:
        return "its body has no Content-Length"
    if length > REPLAYABLE_BODY_BYTES:
        return f"its body is over {REPLAYABLE_BODY_BYTES // (1024 * 1024)} MiB"
    return None


def recall_request(
    request: web.BaseRequest, mode: str, target: str, label: str, raw_path: str, body: bytes | None
) -> RecallRequest:
    """What the recording is asked about: ``request`` to ``target`` (shown as ``label``) at
    ``raw_path`` (a route's prefix already cut; the query kept), with its held ``body`` as the
    client sent it. ``mode``: the target's ``cache`` setting (the config checked it is one of
    CACHE_MODES)."""
    path, _, query = raw_path.partition("?")
    return RecallRequest(
        mode=cast(CacheMode, mode),
        target=target,
        method=request.method,
        path=path,
        query=query,
        body=body or b"",
        raw_headers=request.raw_headers,
        label=label,
    )


def client_path(request: web.BaseRequest, prefix: str) -> str:
    """``request``'s raw path (query kept) with a route's ``prefix`` cut, and nothing else
    changed: a model the target's model_map renames in the path (Gemini's, an Azure
    deployment) is keyed as the client named it, as one renamed in the body is."""
    path, mark, query = request.raw_path.partition("?")
    return (path[len(prefix) :] or "/") + mark + query


class OfflineMiss(ProxyError):
    """A request the recording cannot answer while its target is offline. The answer tells SDKs
    not to ask again (``x-should-retry: false``, which the openai and anthropic SDKs read before
    their own rule of retrying every 5xx): the same question finds the same nothing, and two
    retries with their backoff only delay the error by a second or more."""

    def to_response(self) -> web.Response:
        response = super().to_response()
        response.headers["x-should-retry"] = "false"
        return response


def offline_miss(request: web.BaseRequest, target: str, why: str = "") -> ProxyError:
    """The answer to a request the recording cannot answer while its target is offline."""
    path = redact_target(request.raw_path.partition("?")[0])
    reason = why or "nothing was recorded for it"
    return OfflineMiss(
        f"No recorded answer for {request.method} {path} on target {target} ({reason}), and its"
        " cache is offline: the target was not contacted",
        code="cache_offline_miss",
        status=504,
    )


def replayed_headers(recorded: Sequence[tuple[str, str]], length: int | None) -> CIMultiDict[str]:
    """The recorded headers a replay sends: without those about one connection (aiohttp frames
    the body), and without a Content-Length other than the body's ``length`` when it is known."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in recorded:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == "content-length" and length is not None and value.strip() != str(length)):
            continue
        out.add(name, value)
    return out


async def send_replay(request: web.BaseRequest, record: RequestRecord, replay: Replay) -> web.StreamResponse:
    """Answer ``request`` from ``replay``: the recorded head, then each piece as its iterator
    gives it. A followed recording that is cut cuts this client too (a broken answer, never a
    clean-looking short one), as the target's break cut the recording's own client."""
    loop = asyncio.get_running_loop()
    # The recording is checked when it is written or imported; its framing is checked here
    # again, whatever a store holds: a body where none may go, or a length it does not have,
    # would make the client read the rest as the answer to its next request.
    bodiless = request.method == "HEAD" or replay.status in (204, 205, 304)
    headers = replayed_headers(replay.headers, None if bodiless else replay.length)
    response = PassThroughResponse(
        status=replay.status,
        reason=replay.reason,
        headers=headers,
        hold_headers=not replay.head_first and not bodiless,
    )
    record.status = replay.status
    capture = record.capture
    if capture is not None:
        capture.response(replay.status, replay.reason, response.headers, loop.time())
    await response.prepare(request)
    record.first_byte_at = loop.time()
    if bodiless:
        await response.write_eof()
        return response
    pieces = aiter(replay.pieces)
    while True:
        try:
            piece = await anext(pieces)
        except StopAsyncIteration:
            break
        except ConnectionResetError:  # the followed recording broke off (not this client leaving)
            record.note = "recording_cut"
            if request.transport is not None:
                request.transport.close()
            return response
        record.bytes_down += len(piece)
        if capture is not None:
            capture.chunk(piece, loop.time())
        try:
            await response.write(piece)
        except ConnectionResetError:
            record.note = "client went away"
            return response
    await response.write_eof()
    return response


class BothCaptures:
    """The inspector's capture and a recorder, told the same things in the same order."""

    __slots__ = ("_captures",)

    def __init__(self, captures: Iterable[ExchangeCapture]) -> None:
        self._captures = tuple(captures)

    @classmethod
    def of(cls, capture: ExchangeCapture | None, recorder: Recorder) -> ExchangeCapture:
        """``recorder`` alone, or with ``capture`` when one watches too."""
        return recorder if capture is None else cls((capture, recorder))

    def request_body(self, body: bytes) -> None:
        for capture in self._captures:
            capture.request_body(body)

    def request_piece(self, piece: bytes) -> None:
        for capture in self._captures:
            capture.request_piece(piece)

    def response(self, status: int, reason: str, headers: CIMultiDict[str], at: float) -> None:
        for capture in self._captures:
            capture.response(status, reason, headers, at)

    def chunk(self, data: bytes, at: float) -> None:
        for capture in self._captures:
            capture.chunk(data, at)

    def message(self, to_target: bool, size: int, at: float) -> None:
        for capture in self._captures:
            capture.message(to_target, size, at)

    def end(self, end: ExchangeEnd) -> None:
        # Every one is told, whatever an earlier one raised: a recorder never told of the end
        # would keep its identical requests following an answer that never ends.
        failed: Exception | None = None
        for capture in self._captures:
            try:
                capture.end(end)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
