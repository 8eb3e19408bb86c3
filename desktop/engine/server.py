"""The HTTP server under the proxy: aiohttp's low-level server with our connection handler.

ProxyService uses aiohttp's low-level server rather than an Application: there is one handler
and no routing, and the low-level server lets us replace aiohttp's error page, which quotes the
offending request bytes (a key, possibly) back to the client and the log. Here: the parser's
limits, the parser's refusals answered in the guard's words, and the server that remembers
every connection so stop can close each one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import InvalidURLError, LineTooLong, TransferEncodingError
from aiohttp.web_protocol import RequestHandler

from desktop.engine.errors import ProxyError, RequestRefused
from desktop.engine.forward import bad_request_body
from desktop.engine.refusals import (
    bad_host,
    bad_transfer_encoding,
    both_framings,
    conflicting_lengths,
    invalid_length,
    unencoded_target,
    unknown_method,
)

__all__ = ["HEADER_FIELD_LIMIT", "REQUEST_LINE_LIMIT", "ProxyServer"]

# Refusals go to the service's logger, the name log readers and their filters already know.
log = logging.getLogger("trayproxy.service")


# A parser's description is shown only if it is plain words: llhttp's are fixed phrases
# ("Invalid header value char"), but the pure-Python parser may put the request target (and
# a key= in it) in its message.
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z ,()-]{0,100}")


# aiohttp's parser limits, set explicitly and kept apart so a LineTooLong tells which it was:
# a header line over HEADER_FIELD_LIMIT (aiohttp's default 8190) is the guard's 431; the request
# line may be longer (long query strings), up to REQUEST_LINE_LIMIT, then 400.
HEADER_FIELD_LIMIT = 8190
REQUEST_LINE_LIMIT = 16 * 1024


def _is_header_line(exc: LineTooLong) -> bool:
    """True when the line aiohttp found too long is a header (its limit is max_field_size),
    not the request line (max_line_size)."""
    limit = exc.args[1] if len(exc.args) > 1 else None
    return limit == HEADER_FIELD_LIMIT


# aiohttp's parsers refuse some requests before the guard sees them, the C one (llhttp) more
# than the pure-Python one: the same refusals, with the guard's codes and words, so the README's
# errors table holds whichever parser runs. Keyed by the start of aiohttp's text (llhttp's
# "Bad status line" errors give the reason on the line after it).
_PARSER_REFUSALS: tuple[tuple[str, Callable[[], RequestRefused]], ...] = (
    ("Transfer-Encoding can't be present with Content-Length", both_framings),
    ("Content-Length can't be present with Transfer-Encoding", both_framings),
    ("Duplicate Content-Length", conflicting_lengths),
    ("Duplicate 'Content-Length' header", conflicting_lengths),  # pure-Python
    ("Invalid character in Content-Length", invalid_length),
    ("Content-Length overflow", invalid_length),  # 2^64 or more
    ("Empty Content-Length", invalid_length),
    ("Invalid HTTP header: 'Content-Length'", invalid_length),  # pure-Python
    ("Request has invalid `Transfer-Encoding`", bad_transfer_encoding),
    ("Invalid `Transfer-Encoding` header value", bad_transfer_encoding),
    ("Duplicate 'Transfer-Encoding' header", bad_transfer_encoding),
    ("Missing 'Host' header", bad_host),
    ("Duplicate 'Host' header", bad_host),
    ("Invalid char in url path", unencoded_target),
    ("Invalid char in url query", unencoded_target),
    ("Invalid char in url fragment start", unencoded_target),
    ("Invalid method encountered", unknown_method),
    ("Invalid method for HTTP/x.x request", unknown_method),  # an RTSP method
    ("Expected HTTP/2 Connection Preface", unknown_method),  # PRI on an HTTP/1.1 line
    ("Bad HTTP method in status line", unknown_method),  # pure-Python: not a token
)
_STATUS_LINE_PREFIX = "Bad status line:"
# What the pure-Python parser refuses in a request target (RFC 9112 §3.2).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _parser_refusal(exc: BaseException | None, message: str | None) -> RequestRefused | None:
    if isinstance(exc, TransferEncodingError):
        # The pure-Python parser's chunk errors (its text may be the client's chunk line).
        return bad_request_body()
    if isinstance(exc, InvalidURLError) and _CONTROL_CHARACTER.search(message or ""):
        # The pure-Python parser's text is the request target itself.
        return unencoded_target()
    text = (message or "").lstrip()
    if text.startswith(_STATUS_LINE_PREFIX):
        text = text[len(_STATUS_LINE_PREFIX) :].lstrip()
    for start, refusal in _PARSER_REFUSALS:
        if text.startswith(start):
            return refusal()
    description = text.split("\n", 1)[0].split(":", 1)[0]
    if "chunk" in description.lower() and _PLAIN_WORDS.fullmatch(description):
        # llhttp's chunk errors ("Invalid character in chunk size", "Chunk size overflow",
        # "Expected LF after chunk data", ...); after the head they come as a stalled body.
        return bad_request_body()
    return None


def _raw_answer(refusal: RequestRefused) -> bytes:
    """``refusal`` as a whole HTTP/1.1 response that closes the connection, for where aiohttp
    has no request to answer."""
    body = json.dumps({"error": {"message": refusal.message, "type": refusal.error_type, "code": refusal.code}})
    head = (
        f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


def _first_line(message: str | None) -> str:
    """The description part of a parser error, never the request bytes it quotes."""
    text = (message or "").strip()
    text = text.splitlines()[0] if text else ""
    for cut in (" b'", ' b"', ": ", ":"):
        index = text.find(cut)
        if index > 0 and (cut != ":" or index == len(text) - 1):
            text = text[:index]
    text = text.strip()
    return text if _PLAIN_WORDS.fullmatch(text) else "malformed request"


class _RedactingRequestHandler(RequestHandler):
    """aiohttp's connection handler with an error answer that echoes nothing back."""

    def data_received(self, data: bytes) -> None:
        try:
            super().data_received(data)
        except ValueError:
            # aiohttp's pure-Python parser calls int() on a Content-Length of any length, and
            # Python refuses over 4300 digits (sys.int_info) with ValueError, which aiohttp does
            # not catch: the connection would just drop. Answer as llhttp's overflow is answered.
            refusal = invalid_length()
            transport = self.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            client = peer[0] if isinstance(peer, tuple) else "?"
            log.warning("refused a request from %s: %s (%s)", client, refusal.message, refusal.code)
            if transport is not None:
                transport.write(_raw_answer(refusal))
            self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is out already: the connection is broken; just close it (a
            # failure of the proxy's own still goes to the log, or nobody would ever know).
            if status >= 500 and exc is not None:
                log.error("internal error after the response had started", exc_info=exc)
            raise ConnectionError("response already started")
        if status >= 500:
            log.error("internal error while handling a request", exc_info=exc)
            error: ProxyError = ProxyError(
                "TrayProxy hit an internal error", code="internal_error", status=status
            )
        elif isinstance(exc, LineTooLong) and _is_header_line(exc):
            # aiohttp's parser stops at a header line over its max_field_size before the guard
            # sees the request; it is the guard's "header too large" all the same.
            log.warning("refused a request from %s: a header line is too long (431)", request.remote)
            error = RequestRefused(
                "A request header is too large (over 8 KiB); TrayProxy did not forward the request",
                code="header_too_large",
                status=431,
            )
        elif (known := _parser_refusal(exc, message)) is not None:
            log.warning("refused a request from %s: %s (%s)", request.remote, known.message, known.code)
            error = known
        else:
            reason = _first_line(message)
            log.warning("refused a malformed request from %s: %s (%d)", request.remote, reason, status)
            error = RequestRefused(
                f"TrayProxy could not read the request: {reason}", code="bad_request", status=status
            )
        response = error.to_response()
        response.force_close()
        return response


class ProxyServer(web.Server):
    """web.Server that builds our request handler (aiohttp has no public hook for the class)
    and remembers every connection, so stop can be sure each one is closed."""

    def __init__(self, handler: Any, *, handler_cancellation: bool = False, **handler_args: Any) -> None:
        super().__init__(handler, handler_cancellation=handler_cancellation, **handler_args)
        # The settings each connection's handler is built with (web.Server keeps its copy private).
        self.handler_args = handler_args
        self.handlers: weakref.WeakSet[RequestHandler] = weakref.WeakSet()
        self.stopped = False

    def __call__(self) -> RequestHandler:
        handler = _RedactingRequestHandler(self, loop=asyncio.get_running_loop(), **self.handler_args)
        self.handlers.add(handler)
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self.stopped:
            # Accepted by the kernel just before the listener closed, handed over by asyncio
            # after stop: nobody would ever close it.
            transport.abort()

    def abort_connections(self) -> None:
        """Drop every connection still open, unsent bytes included.

        aiohttp's shutdown closes connections, but a transport whose client stopped reading
        waits to flush its buffer before it really closes; when the loop then ends, its socket
        is never closed (seen as a ResourceWarning under load)."""
        self.stopped = True
        for handler in list(self.handlers):
            transport = handler.transport
            if transport is not None:
                transport.abort()
