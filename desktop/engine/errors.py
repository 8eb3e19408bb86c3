"""Errors the proxy answers itself, in the shape clients already parse.

OpenAI-compatible SDKs read ``{"error": {"message", "type", "code"}}`` and show the message, so
every answer the proxy makes on its own uses that shape. Client-library exceptions are mapped
here, at one boundary, most specific first::

    ProxyError                      an answer the proxy gives instead of the target's
    ├── RequestRefused              4xx: the request is not safe or not valid to forward
    ├── UpstreamUnreachable         502: DNS, refused, TLS, proxy, reset before an answer
    └── UpstreamTimeout             504: connect, time to headers, or idle gap ran out

Messages name the target and the cause, never a header value or a key.
"""

from __future__ import annotations

import asyncio
import errno
import json
import ssl

import aiohttp
from aiohttp import web

__all__ = [
    "NOT_TLS_REASONS",
    "ProxyError",
    "RequestRefused",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "map_client_error",
]


# OpenSSL's reasons for a handshake whose answer is not TLS at all, as when an https:// target's
# port speaks plain HTTP: its "HTTP/1.1 400" reads as a record of an unknown version
# (OpenSSL 1.1 and 3.0: WRONG_VERSION_NUMBER; 3.2 and later: RECORD_LAYER_FAILURE) or of an
# impossible length; older versions said UNKNOWN_PROTOCOL.
NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)


class ProxyError(Exception):
    """An answer the proxy makes itself."""

    status = 502
    error_type = "trayproxy_error"

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        if status is not None:
            self.status = status

    def to_response(self) -> web.Response:
        """The JSON answer; nothing else (no Server, no Date) is added by the caller."""
        body = {"error": {"message": self.message, "type": self.error_type, "code": self.code}}
        return web.Response(
            status=self.status,
            body=json.dumps(body).encode(),
            content_type="application/json",
        )


class RequestRefused(ProxyError):
    """The request is not forwarded: it is malformed or could spend the user's keys unasked.

    With ``close_connection`` the answer also closes the client's connection: after a request
    whose end cannot be told (RFC 9112 §6.3: broken framing, a body that stopped), what follows
    on the connection is not known to be the next request."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(
        self, message: str, *, code: str, status: int | None = None, close_connection: bool = False
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.close_connection = close_connection

    def to_response(self) -> web.Response:
        response = super().to_response()
        if self.close_connection:
            response.force_close()
        return response


class UpstreamUnreachable(ProxyError):
    """No answer could be had from the target."""

    status = 502
    error_type = "upstream_error"


class UpstreamTimeout(ProxyError):
    """The target took longer than the configured timeout."""

    status = 504
    error_type = "upstream_error"


def map_client_error(exc: BaseException, *, target: str) -> ProxyError:
    """Turn an aiohttp client exception (or timeout) into the answer to give, naming ``target``."""
    where = f"TrayProxy could not reach the target {target}"
    # Order matters: aiohttp's exception classes inherit from each other (a DNS error is a
    # connector error is an OS error), so the most specific checks come first.
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamUnreachable(f"{where}: its host name could not be resolved", code="dns_error")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", None) or "verification failed"
        return UpstreamUnreachable(
            f"{where}: its TLS certificate is not trusted ({detail})", code="tls_certificate_error"
        )
    if isinstance(exc, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError, ssl.SSLError)):
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        if getattr(cause, "reason", None) in NOT_TLS_REASONS:
            return UpstreamUnreachable(
                f"{where}: the TLS handshake failed, the answer was not TLS (is the target plain http://?)",
                code="tls_error",
            )
        return UpstreamUnreachable(f"{where}: the TLS handshake failed", code="tls_error")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return UpstreamUnreachable(
            f"{where}: the outgoing HTTP proxy {exc.host}:{exc.port} refused or cannot be reached "
            "(HTTPS_PROXY / HTTP_PROXY, or proxy in the config)",
            code="proxy_error",
        )
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeout(f"{where}: connecting timed out", code="connect_timeout")
        return UpstreamTimeout(f"The target {target} did not answer in time", code="upstream_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return UpstreamUnreachable(f"{where}: the connection was refused", code="connection_refused")
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return UpstreamUnreachable(f"{where}: {reason}", code="connect_error")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnreachable(
            f"The target {target} closed the connection without answering", code="upstream_disconnected"
        )
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return UpstreamUnreachable(
            f"The target {target} reset the connection without answering", code="connection_reset"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamUnreachable(
            f"The target {target} sent a response TrayProxy cannot read", code="bad_upstream_response"
        )
    return UpstreamUnreachable(f"{where}: {type(exc).__name__}", code="upstream_error")
