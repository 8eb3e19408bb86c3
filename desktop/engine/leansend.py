"""The lean send path: aiohttp's client request, connector and response driven directly.

ClientSession.request spends about 14 % of a small request's CPU (151 -> 130 us per request in
tests/bench, commit 292c7b9) on what a proxy never uses there: redirects, cookies, auth,
default headers merged into fresh copies, trace signals, a total timeout, middlewares.
aiohttp has no public way to skip them. This module does what ClientSession._request does
with the parts a proxy needs, through aiohttp internals as read in 3.14: ClientRequest's
internal arguments (loop, timer, session, traces), ``ClientRequest._skip_auto_headers``,
``ResponseHandler.set_response_params``, ``helpers.TimerNoop`` and
``helpers.EMPTY_BODY_METHODS`` (methods whose answer has no body: "HEAD" in 3.14.5, every
spelling of it in 3.14.0). upstream.py imports it only on aiohttp 3.14.x (LEAN_SEND); every
other version sends through ClientSession.request with public options only.
tests/engine/test_aiohttp_internals.py pins each internal used here, so a 3.14 release that
changes one fails there by name, and the forwarding tests run on both paths.

Nothing else may import this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.helpers import EMPTY_BODY_METHODS, TimerNoop
from multidict import CIMultiDict
from yarl import URL

from desktop.engine.exactrequest import SKIP_AUTO_HEADERS, ExactRequest

__all__ = ["LeanRequest", "LeanSender"]

_NO_TIMER = TimerNoop()
_SKIPPED: CIMultiDict[None] = CIMultiDict((name, None) for name in sorted(SKIP_AUTO_HEADERS))


class LeanRequest(ExactRequest):
    """ExactRequest whose auto-headers step only records SKIP_AUTO_HEADERS as the names to
    leave out: aiohttp's own step copies the headers and builds a sorted multidict of the
    skipped names on every request (about 3 % of a small request's CPU) to add nothing this
    proxy sends. Its body and send steps read the skipped names (Content-Type) from here."""

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        self._skip_auto_headers = _SKIPPED


class LeanSender:
    """Sends requests on ``session``'s connector as ClientSession._request would."""

    __slots__ = ("_connector", "_limits", "_loop", "_read_buffer_bytes", "_session", "_timeout")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connector: aiohttp.TCPConnector,
        *,
        timeout_ceil_threshold_s: float,
        read_buffer_bytes: int,
        max_line_bytes: int,
        max_headers: int,
    ) -> None:
        self._session = session
        self._connector = connector
        self._timeout = session.timeout
        self._loop = asyncio.get_running_loop()
        self._read_buffer_bytes = read_buffer_bytes
        self._limits = (timeout_ceil_threshold_s, max_line_bytes, max_headers)

    async def send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        *,
        proxy: URL | None,
        proxy_headers: dict[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """Send one request; return the response once its head is in. Raises what
        ClientSession.request raises, converted the same way."""
        request = LeanRequest(
            method,
            url,
            headers=headers,
            data=body,
            loop=self._loop,
            response_class=aiohttp.ClientResponse,
            proxy=proxy,
            proxy_headers=proxy_headers,
            timer=_NO_TIMER,
            session=self._session,
            traces=[],
        )
        ceil_threshold_s, max_line_bytes, max_headers = self._limits
        try:
            try:
                connection = await self._connector.connect(request, traces=[], timeout=self._timeout)
            except TimeoutError as exc:
                raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
            protocol = connection.protocol
            assert protocol is not None
            protocol.set_response_params(
                timer=_NO_TIMER,
                skip_payload=method in EMPTY_BODY_METHODS,
                read_until_eof=True,
                auto_decompress=False,
                read_timeout=self._timeout.sock_read,
                read_bufsize=self._read_buffer_bytes,
                timeout_ceil_threshold=ceil_threshold_s,
                max_line_size=max_line_bytes,
                max_field_size=max_line_bytes,
                max_headers=max_headers,
            )
            try:
                response = await request.send(connection)
                try:
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
            except BaseException:
                connection.close()
                raise
        except aiohttp.ClientError:
            raise
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise
            raise aiohttp.ClientOSError(*exc.args) from exc
        finally:
            # The request body is done with once the response head is in, or on failure
            # (ClientSession._request closes it the same way).
            await _close_body(request)
        return response


async def _close_body(request: aiohttp.ClientRequest) -> None:
    body: Any = request.body  # the payload, or b"" for none
    if not isinstance(body, bytes):
        await body.close()
