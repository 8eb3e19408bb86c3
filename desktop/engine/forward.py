"""Forward one HTTP request to the target and stream the answer back as it arrives.

Nothing is collected, decoded or re-encoded: the request body goes up chunk by chunk (small
bodies of known length are read first so a dead pooled connection can be retried), and the
response goes down chunk by chunk with the target's own headers, so gzip stays gzip and an SSE
token reaches the client the moment the target sends it. A slow client slows the upstream read
through aiohttp's buffer limits instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp
from aiohttp import StreamReader, hdrs, web
from aiohttp.http_exceptions import TransferEncodingError
from multidict import CIMultiDict

from desktop.engine.capture import ExchangeCapture, WebSocketTally
from desktop.engine.errors import ProxyError, RequestRefused, map_client_error
from desktop.engine.headers import response_headers
from desktop.engine.recall import Recorder
from desktop.engine.upstream import REUSE_NOTE, ReuseNote, Upstream

__all__ = [
    "NO_BODY",
    "REPLAYABLE_BODY_BYTES",
    "REQUEST_BODY_GAP_S",
    "PassThroughResponse",
    "RequestBody",
    "RequestRecord",
    "bad_request_body",
    "forward_http",
    "open_upstream",
    "pass_response",
    "send_with_pool_retry",
    "take_body",
]

log = logging.getLogger("trayproxy.forward")

# Bodies up to this size (with a Content-Length) are read before sending, so the request can be
# sent again if a pooled connection turns out dead. Chat requests are far smaller; uploads of
# unknown or larger size stream through untouched.
REPLAYABLE_BODY_BYTES = 1024 * 1024
# Attempts for one request when pooled connections turn out dead (see send_with_pool_retry).
MAX_ATTEMPTS = 4
CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"
# How long a client may send nothing more of its request body before it gets 400
# bad_request_body (nginx's client_body_timeout, 60 s by default, is the same bound). Without it
# a stalled client, or a chunk size such as FFFFFFFFFFFFFFFFFFFF that the pure-Python parser
# reads as a huge chunk still to come, holds its connection and the target's until the client
# leaves. Only the wait for the client counts: an upload of any length and duration passes while
# bytes keep coming, however slowly the target takes them. 8 s, so the answer comes within 10 s.
REQUEST_BODY_GAP_S = 8.0

_Opened = TypeVar("_Opened")


class PassThroughResponse(web.StreamResponse):
    """A response that carries exactly the target's headers.

    aiohttp's server adds Content-Type (to any non-empty body), Date and Server when absent; a
    proxy that adds them changes what the client sees (RFC 9110 §8.3 leaves Content-Type to the
    origin), so those it added are taken out again before the headers are written.

    With ``hold_headers`` the status line and headers wait for the first body bytes (or the
    end) and leave in the same send, which halves the sends of a small answer.

    aiohttp has no public way to do either: its server adds those headers in
    ``StreamResponse._prepare_headers`` with nothing to switch it off, and holding the headers
    is its own web.Response's private ``_send_headers_immediately``; ``_real_headers`` (the
    headers used as they are, not copied) is private too. These four names are read in aiohttp
    3.12 .. 3.14, pyproject.toml keeps aiohttp below 3.15, and
    tests/engine/test_aiohttp_internals.py pins each one.
    """

    def __init__(
        self, *, headers: CIMultiDict[str], hold_headers: bool = False, status: int, reason: str | None
    ) -> None:
        # ``headers`` is built for this response alone, so it is used as is.
        super().__init__(status=status, reason=reason, _real_headers=headers)
        # Held headers sit in the writer's buffer until the first body chunk or write_eof.
        self._send_headers_immediately = not hold_headers

    async def _prepare_headers(self) -> None:
        headers = self._headers
        had_type = hdrs.CONTENT_TYPE in headers
        had_date = hdrs.DATE in headers
        had_server = hdrs.SERVER in headers
        await super()._prepare_headers()
        if not had_type:
            headers.popall(hdrs.CONTENT_TYPE, None)
        if not had_date:
            headers.popall(hdrs.DATE, None)
        if not had_server:
            headers.popall(hdrs.SERVER, None)


class RequestRecord:
    """What the access log needs to know about one request; filled in as it goes."""

    __slots__ = (
        "answered_by",
        "attempts",
        "bytes_down",
        "cache",
        "cache_note",
        "capture",
        "chosen_by",
        "error",
        "first_byte_at",
        "head_at",
        "note",
        "outcomes",
        "recorder",
        "status",
        "target",
        "websocket",
    )

    def __init__(self) -> None:
        # With routes: which route chose the target ("model:claude-*"), and each target tried
        # with what it answered ("anthropic 529"), in order; empty without routes.
        self.chosen_by = ""
        self.attempts: list[str] = []
        # With routes: each target tried that did not answer the client, with what it gave
        # (status, the failure's code and message), for the service to note each target's
        # condition; and the target whose answer the client got (None: a kept one, or an error).
        self.outcomes: list[tuple[Upstream, int, str, str]] | None = None
        self.answered_by: Upstream | None = None
        # The target the request went to (its name): with targets on ports of their own, or a
        # switch while requests were open, the log says which one answered.
        self.target = ""
        self.status = 0
        self.bytes_down = 0
        self.first_byte_at: float | None = None
        # When the answering target's response head came in (before failover read its first
        # event): the time to first byte the inspector shows.
        self.head_at: float | None = None
        # A short code for the access log: why the request ended unusually.
        self.note = ""
        # The proxy's own error message when it answered instead of the target.
        self.error = ""
        # Who watches this request (capture.py); None when nobody does.
        self.capture: ExchangeCapture | None = None
        # A watched WebSocket's messages, bytes and close, as its carrier counted them.
        self.websocket: WebSocketTally | None = None
        # What the recording of answers did: "hit" (answered from it), "miss" (sent, and
        # recorded), "record" (sent and recorded: record mode), "offline-miss", "bypass" (a
        # request the recording may not answer or keep: no-store, a body it cannot hold),
        # "unkept" (sent to be recorded, but its answer is not kept: ``cache_note`` says why);
        # "" when unused.
        self.cache = ""
        self.cache_note = ""
        # Who records the answer (a miss or record mode); asked at the end whether it keeps it.
        self.recorder: Recorder | None = None


def bad_request_body() -> RequestRefused:
    """The answer to a request body that cannot be read: invalid chunked coding, or a stall."""
    return RequestRefused(
        "The request body could not be read: its chunked coding is invalid, or it stopped "
        f"arriving (nothing for {REQUEST_BODY_GAP_S:g} s)",
        code="bad_request_body",
        close_connection=True,
    )


async def _next_body_piece(content: StreamReader) -> bytes:
    """The next bytes of the request body as they arrive (b"" at its end); raises
    bad_request_body() when none come for REQUEST_BODY_GAP_S or the chunked coding is broken."""
    try:
        # What has arrived already is taken without a timer (one costs ~5 µs a read).
        piece = content.read_nowait()
        if piece or content.at_eof():
            return piece
        async with asyncio.timeout(REQUEST_BODY_GAP_S):
            return await content.readany()
    except (TimeoutError, TransferEncodingError) as exc:
        # TransferEncodingError: the pure-Python parser's chunk errors after the head (llhttp's
        # leave the body waiting, which the gap bound ends).
        raise bad_request_body() from exc


async def _read_body(content: StreamReader, length: int) -> bytes:
    """The whole body of ``length`` bytes, waiting at most REQUEST_BODY_GAP_S for each piece."""
    if content.is_eof():
        return await content.readexactly(length)  # all of it is here already: no waiting
    pieces: list[bytes] = []
    received = 0
    while received < length:
        piece = await _next_body_piece(content)
        if not piece:
            raise asyncio.IncompleteReadError(b"".join(pieces), length)
        pieces.append(piece)
        received += len(piece)
    return b"".join(pieces)


class _StreamedBody:
    """A request body sent upstream as it arrives. aiohttp reports any failure of a body as a
    connection error of the upstream request, so ``fault`` keeps the client's own fault (see
    bad_request_body) for the caller to answer with instead."""

    __slots__ = ("capture", "fault")

    def __init__(self, capture: ExchangeCapture | None = None) -> None:
        self.fault: RequestRefused | None = None
        self.capture = capture

    async def pieces(self, request: web.BaseRequest, send_continue: bool) -> AsyncIterator[bytes]:
        if send_continue:
            await request.writer.write(CONTINUE_LINE)
        while True:
            try:
                piece = await _next_body_piece(request.content)
            except RequestRefused as refusal:
                self.fault = refusal
                raise
            if not piece:
                return
            if self.capture is not None:
                self.capture.request_piece(piece)
            yield piece


class RequestBody:
    """A request's body as it goes upstream: ``held`` (read whole first, so it can be sent again
    and looked into) or streamed (sent once, as it arrives); neither when there is none."""

    __slots__ = ("held", "pieces", "streamed")

    def __init__(
        self,
        held: bytes | None = None,
        streamed: _StreamedBody | None = None,
        pieces: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.held = held
        self.streamed = streamed
        self.pieces = pieces

    @property
    def replayable(self) -> bool:
        """True when the body can be sent again (held, or none at all)."""
        return self.streamed is None


NO_BODY = RequestBody()


async def take_body(request: web.BaseRequest, capture: ExchangeCapture | None = None) -> RequestBody:
    """``request``'s body: read now when it is held for replay (a Content-Length of at most
    REPLAYABLE_BODY_BYTES, after a 100 Continue if the client waits for one), else set up to be
    streamed when sent. ``capture`` is told of the body: whole when held, piece by piece as a
    streamed one goes up."""
    if not request.body_exists:
        return NO_BODY
    send_continue = request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
    length = request.content_length
    if length is not None and length <= REPLAYABLE_BODY_BYTES:
        if send_continue:
            await request.writer.write(CONTINUE_LINE)
        held = await _read_body(request.content, length)
        if capture is not None:
            capture.request_body(held)
        return RequestBody(held=held)
    streamed = _StreamedBody(capture)
    return RequestBody(streamed=streamed, pieces=streamed.pieces(request, send_continue))


async def open_upstream(
    request: web.BaseRequest,
    upstream: Upstream,
    body: RequestBody,
    *,
    path: str,
    replaced_body: bytes | None = None,
) -> aiohttp.ClientResponse:
    """Send ``request`` to ``upstream`` at ``path`` (the raw target: path and query) with
    ``body`` (or ``replaced_body`` in place of a held one: a model renamed for this target, its
    Content-Length set to match); return the response once its head is in. Raises ProxyError."""
    headers = upstream.rules.apply(request.raw_headers, client_ip=request.remote or "")
    if upstream.proxy_authorization and upstream.proxy_headers is None:
        headers["Proxy-Authorization"] = upstream.proxy_authorization
    url = upstream.url_for(path)
    payload: bytes | AsyncIterator[bytes] | None = body.held if body.pieces is None else body.pieces
    if replaced_body is not None:
        payload = replaced_body
        headers[hdrs.CONTENT_LENGTH] = str(len(replaced_body))
    try:
        # A body read whole first can be sent a second time (see send_with_pool_retry).
        return await send_with_pool_retry(
            upstream, lambda: upstream.send(request.method, url, headers, payload), replayable=body.replayable
        )
    except ProxyError:
        if body.streamed is not None and body.streamed.fault is not None:
            raise body.streamed.fault from None
        raise


async def send_with_pool_retry(
    upstream: Upstream, send: Callable[[], Awaitable[_Opened]], *, replayable: bool
) -> _Opened:
    """``send()``'s response (or WebSocket); sent again while it fails on connections from the
    pool (see below). Raises ProxyError for a failure the client should be told about;
    aiohttp.WSServerHandshakeError (the target refused a WebSocket) as it is."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        note = ReuseNote()
        token = REUSE_NOTE.set(note)
        try:
            return await send()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # A pooled connection that died while idle (sleep, network change, the server's
            # own idle timeout) fails before any response byte; the request never reached the
            # target, so it is sent again. Each dead one leaves the pool, so after a sleep the
            # next pooled one may fail too: go on while failures come from the pool, stop at
            # the first failure on a fresh connection (that one may have reached the target).
            if (
                attempt < MAX_ATTEMPTS
                and note.reused
                and replayable
                and not isinstance(exc, aiohttp.ClientConnectorError)
            ):
                log.debug("pooled connection to %s failed; retrying on a new one", upstream.label)
                continue
            raise map_client_error(exc, target=upstream.label) from exc
        except aiohttp.WSServerHandshakeError:
            raise  # the target refused the upgrade: its answer, for the caller to pass on
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_client_error(exc, target=upstream.label) from exc
        finally:
            REUSE_NOTE.reset(token)
    raise AssertionError("unreachable")  # pragma: no cover


async def forward_http(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    *,
    path: str | None = None,
    local_prefix: str = "",
) -> web.StreamResponse:
    """Send ``request`` to ``upstream`` at ``path`` (default: the client's raw path; a route
    cut ``local_prefix`` off it) and stream its answer to the client."""
    try:
        body = await take_body(request, record.capture)
        upstream_response = await open_upstream(
            request, upstream, body, path=request.raw_path if path is None else path
        )
    except ProxyError as exc:
        record.note = exc.code
        record.error = exc.message
        return exc.to_response()
    return await pass_response(request, upstream, record, upstream_response, local_prefix=local_prefix)


async def pass_response(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    upstream_response: aiohttp.ClientResponse,
    *,
    first: bytes = b"",
    local_prefix: str = "",
) -> web.StreamResponse:
    """Stream the target's ``upstream_response`` to the client as it arrives; release it.
    ``first``: body bytes already read from it (failover looked at them), sent first;
    ``local_prefix``: the route prefix the client used, put back into a Location."""
    try:
        body = upstream_response.content
        response = PassThroughResponse(
            # Hold the headers back only when body bytes (or the end) are already here, as
            # for a small answer that arrived in the packet with its headers: they go out
            # together in the loop below without waiting. Otherwise (an SSE stream, a slow
            # body) the client gets the status now, not when the first event comes.
            hold_headers=bool(first) or bool(body.total_bytes) or body.is_eof(),
            status=upstream_response.status,
            reason=upstream_response.reason,
            headers=response_headers(
                upstream_response.raw_headers,
                target_prefix=upstream.prefix,
                base_path=upstream.base_path,
                local_base="http://" + (request.host or ""),
                local_prefix=local_prefix,
            ),
        )
        record.status = upstream_response.status
        loop = asyncio.get_running_loop()
        capture = record.capture
        if capture is not None:
            head_at = record.head_at if record.head_at is not None else loop.time()
            capture.response(upstream_response.status, upstream_response.reason or "", response.headers, head_at)
        await response.prepare(request)
        record.first_byte_at = loop.time()
        try:
            if body.is_eof():
                # The whole body is here already (a small answer): headers, body and end go
                # out in one write, without the chunk loop.
                data = first + body.read_nowait()
                record.bytes_down = len(data)
                if capture is not None and data:
                    capture.chunk(data, record.first_byte_at)
                await response.write_eof(data)
            else:
                if first:
                    record.bytes_down = len(first)
                    if capture is not None:
                        capture.chunk(first, record.first_byte_at)
                    await response.write(first)
                if capture is None:
                    async for chunk in body.iter_any():
                        record.bytes_down += len(chunk)
                        await response.write(chunk)
                else:
                    # The same loop, telling the capture of each piece (the loop above stays
                    # as lean as it was when nobody watches).
                    async for chunk in body.iter_any():
                        record.bytes_down += len(chunk)
                        capture.chunk(chunk, loop.time())
                        await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The target broke off mid-body. Closing without the final chunk (or short of the
            # Content-Length) makes the client see a broken response, never a clean-looking
            # truncated one; aiohttp's own write_eof then fails quietly on the closed socket.
            record.note = map_client_error(exc, target=upstream.label).code
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        # Returns a fully read connection to the pool; closes one cut short.
        upstream_response.release()
