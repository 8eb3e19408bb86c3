"""Carry a WebSocket between the client and the target.

The upstream handshake happens first, so the client is only accepted once the target has
accepted. Two ways to carry it after that:

- ``relay_websocket`` (the default on the aiohttp version it was checked against, RAW_RELAY):
  the client's handshake goes to the target as it is (key, version, subprotocols, extensions)
  and the target's 101 comes back as it is, so the two peers agree on everything end to end and
  the proxy relays their bytes without parsing messages (wsrelay.py), as nginx and Caddy do.
- ``bridge_websocket`` (any other aiohttp version): a WebSocket of aiohttp's on each side and
  two pump tasks copying messages: text, binary, ping and pong as they are, and a close frame's
  code and reason passed on (RFC 6455 §7.4) instead of a generic 1000.

Either way there are no size limits, auto-pings or auto-closes, and a stopping proxy tells both
peers 1001.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from desktop.engine.capture import WebSocketTally
from desktop.engine.errors import ProxyError, UpstreamUnreachable
from desktop.engine.forward import PassThroughResponse, RequestRecord, pass_response, send_with_pool_retry
from desktop.engine.headers import WEBSOCKET_HANDSHAKE, RawHeaders, response_headers, without_key_offers
from desktop.engine.upstream import Upstream
from desktop.engine.wsrelay import (
    CLOSE_GOING_AWAY,
    CLOSE_PEER_LOST,
    CLOSE_TIMEOUT_S,
    GOING_AWAY_REASON,
    PEER_LOST_REASON,
    WebSocketRelay,
)
from desktop.engine.wstally import CLOSE_ABNORMAL, CLOSE_NO_STATUS, DirectionWatch, first_close, text_size

__all__ = ["OpenWebSocket", "UpgradeFailed", "carry_websocket"]

log = logging.getLogger("trayproxy.websocket")

# The relay takes both connections over through aiohttp's payload-parser hook (set_parser on
# its server and client protocols), read in 3.14; other versions bridge messages instead.
RAW_RELAY = aiohttp.__version__.startswith("3.14.")

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class OpenWebSocket(Protocol):
    """One carried WebSocket, as the service sees it when it stops: a WebSocketRelay, or a
    bridged pair."""

    async def going_away(self) -> None: ...


class _BridgedWebSocket:
    def __init__(
        self,
        client_ws: web.WebSocketResponse,
        upstream_ws: aiohttp.ClientWebSocketResponse,
        tally: WebSocketTally | None,
    ) -> None:
        self.client_ws = client_ws
        self.upstream_ws = upstream_ws
        self.tally = tally

    async def going_away(self) -> None:
        if self.tally is not None:
            first_close(self.tally, "proxy", CLOSE_GOING_AWAY)
        await asyncio.gather(
            self.client_ws.close(code=CLOSE_GOING_AWAY, message=GOING_AWAY_REASON),
            self.upstream_ws.close(code=CLOSE_GOING_AWAY, message=GOING_AWAY_REASON),
            return_exceptions=True,
        )


class UpgradeFailed(Exception):
    """The target did not take the WebSocket (no 101), and the caller asked to try another
    instead of answering: nothing has been sent to the client. ``cause`` is the target's status
    or the proxy's error code, for the access line."""

    def __init__(self, cause: str, *, status: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status


def _refused(target: str, status: int, record: RequestRecord) -> web.StreamResponse:
    error = UpstreamUnreachable(
        f"The target {target} refused the WebSocket upgrade (HTTP {status})",
        code="websocket_refused",
        status=status if 400 <= status < 600 else 502,
    )
    record.note = error.code
    return error.to_response()


async def carry_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    live: set[OpenWebSocket],
    *,
    token_required: bool = False,
    path: str | None = None,
    local_prefix: str = "",
    fail_over: bool = False,
) -> web.StreamResponse:
    """Open the upstream WebSocket at ``path`` (default: the client's raw path), accept the
    client's, and carry it until either side ends. With ``fail_over``, a target that does not
    take it raises UpgradeFailed instead of the client being told."""
    offers = _offered_protocols(request, drop_key_offers=token_required or upstream.rules.drops_key_offers)
    leg = _Leg(request.raw_path if path is None else path, local_prefix, fail_over)
    if RAW_RELAY:
        return await relay_websocket(request, upstream, record, live, offers, leg)
    return await bridge_websocket(request, upstream, record, live, offers, leg)


class _Leg:
    """Where one upgrade goes on its target, and whether a refusal is the caller's to handle."""

    __slots__ = ("fail_over", "local_prefix", "path")

    def __init__(self, path: str, local_prefix: str, fail_over: bool) -> None:
        self.path = path
        self.local_prefix = local_prefix
        self.fail_over = fail_over


async def relay_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    live: set[OpenWebSocket],
    offers: list[str],
    leg: _Leg,
) -> web.StreamResponse:
    """Pass the handshake through both ways, then relay the bytes (see wsrelay.py)."""
    headers = upstream.rules.apply(request.raw_headers, client_ip=request.remote or "")
    # Hop-by-hop on any other request; here they are the request.
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    # One list-valued header, as RFC 9110 §5.3 allows: many servers read only the first.
    headers.popall("Sec-WebSocket-Protocol", None)
    if offers:
        headers["Sec-WebSocket-Protocol"] = ", ".join(offers)
    target = upstream.label
    url = upstream.url_for(leg.path)
    try:
        # A handshake has no body, so it is sent again like any request when a pooled
        # connection turns out dead.
        response = await send_with_pool_retry(
            upstream,
            lambda: upstream.request(
                "GET",
                url,
                headers=headers,
                read_until_eof=False,
                allow_redirects=False,
                proxy=upstream.proxy,
                proxy_headers=upstream.proxy_headers,
            ),
            replayable=True,
        )
    except ProxyError as error:
        if leg.fail_over:
            raise UpgradeFailed(error.code) from error
        record.note = error.code
        record.error = error.message
        return error.to_response()
    if response.status >= 300:
        if leg.fail_over:
            response.release()
            raise UpgradeFailed(str(response.status), status=response.status)
        # The target said no (a rejected key, a wrong path, a redirect): the tool gets its
        # answer as it is, body and headers, as for any request, so its reason is not lost.
        record.note = "websocket_refused"
        return await pass_response(request, upstream, record, response, local_prefix=leg.local_prefix)
    connection = response.connection
    if (
        response.status != 101
        or response.headers.get("Upgrade", "").lower() != "websocket"
        or connection is None
        or connection.protocol is None
        or connection.transport is None
    ):
        response.close()
        if leg.fail_over:
            raise UpgradeFailed(str(response.status), status=response.status)
        return _refused(target, response.status, record)
    target_protocol = connection.protocol
    target_transport = connection.transport
    # A WebSocket may be quiet for hours; aiohttp's ws_connect drops the read timeout too.
    target_protocol.read_timeout = None

    answer = response_headers(
        response.raw_headers,
        target_prefix=upstream.prefix,
        base_path=upstream.base_path,
        local_base="",
        local_prefix=leg.local_prefix,
    )
    answer["Upgrade"] = "websocket"
    answer["Connection"] = "Upgrade"
    client = PassThroughResponse(headers=answer, status=101, reason=response.reason)
    relay: WebSocketRelay | None = None
    try:
        await client.prepare(request)
        client_protocol = request.protocol
        client_transport = request.transport
        if client_transport is None:
            return client  # the client left during the handshake
        record.status = 101
        record.first_byte_at = asyncio.get_running_loop().time()
        client_protocol.keep_alive(False)
        relay = WebSocketRelay(
            client_transport=client_transport,
            client_protocol=client_protocol,
            target_transport=target_transport,
            target_protocol=target_protocol,
            capture=record.capture,
        )
        record.websocket = relay.tally
        live.add(relay)
        try:
            relay.start()
            await relay.done
        finally:
            live.discard(relay)
    finally:
        if relay is None:
            response.close()
        else:
            if not relay.done.done():
                # Cancelled while both ends are open: the proxy is cutting open requests at
                # the end of its stop grace period. Say so to both rather than just vanish.
                relay.close_now()
            record.bytes_down = relay.bytes_down
            record.note = relay.ended
            response.release()
    return client


def _offered_protocols(request: web.BaseRequest, *, drop_key_offers: bool) -> list[str]:
    # RFC 6455 §11.3.4 lets a client repeat the header; every offer counts. With the local
    # token required, an offer carrying a key carries the token (see localtoken.py); with a
    # target adding its own key, the client's is a placeholder (headers.py): the target gets neither.
    offers = [p for header in request.headers.getall("Sec-WebSocket-Protocol", []) for p in header.split(",")]
    if drop_key_offers:
        return without_key_offers(offers)
    return [stripped for stripped in (p.strip() for p in offers) if stripped]


def _handshake_headers(raw: RawHeaders, upstream: Upstream) -> CIMultiDict[str]:
    """The target's 101 headers (X-Request-Id and the like) minus the handshake's own."""
    headers = response_headers(
        raw, target_prefix=upstream.prefix, base_path=upstream.base_path, local_base=""
    )
    for name in WEBSOCKET_HANDSHAKE:
        headers.popall(name, None)
    return headers


async def _pump(source: AnyWebSocket, sink: AnyWebSocket, watch: DirectionWatch | None = None) -> None:
    """Copy messages from ``source`` to ``sink`` until either side closes; each copied
    message and the source's close are told to ``watch``, when the WebSocket is watched."""
    while True:
        msg = await source.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(msg.data)
            if watch is not None:
                watch.message(text_size(msg.data))
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
            if watch is not None:
                watch.message(len(msg.data))
        elif kind is WSMsgType.PING:
            await sink.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else 1000
            if watch is not None:
                # aiohttp reads a close frame without a code as 0.
                watch.closed(code or CLOSE_NO_STATUS)
            reason = (msg.extra or "").encode()
            # Pass the close on, wait for the far side's answer, then answer the near side
            # with the same code (the usual echo of a close frame).
            await sink.close(code=code, message=reason)
            await source.close(code=code, message=reason)
            return
        else:
            # CLOSING: the other pump is closing this socket; CLOSED/ERROR: the connection
            # dropped without a close frame, so tell the far side its peer is gone.
            if kind is not WSMsgType.CLOSING:
                if watch is not None:
                    watch.closed(CLOSE_ABNORMAL)
                if not sink.closed:
                    await sink.close(code=CLOSE_PEER_LOST, message=PEER_LOST_REASON)
            return


async def bridge_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    live: set[OpenWebSocket],
    offers: list[str],
    leg: _Leg,
) -> web.StreamResponse:
    """Open the upstream WebSocket, accept the client's, and copy messages both ways."""
    headers = upstream.rules.apply(request.raw_headers, client_ip=request.remote or "", websocket=True)
    deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
    target = upstream.label
    url = upstream.url_for(leg.path)
    try:
        # A handshake has no body: sent again like any request when a pooled connection
        # turns out dead.
        upstream_ws, handshake = await send_with_pool_retry(
            upstream,
            lambda: upstream.ws_connect(
                url,
                protocols=offers,
                headers=headers,
                autoclose=False,
                autoping=False,
                max_msg_size=0,
                # Compress upstream only when the client asked for it on its side.
                compress=15 if deflate else 0,
                proxy=upstream.proxy,
                proxy_headers=upstream.proxy_headers,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
            ),
            replayable=True,
        )
    except aiohttp.WSServerHandshakeError as exc:
        if leg.fail_over:
            raise UpgradeFailed(str(exc.status), status=exc.status) from exc
        return _refused(target, exc.status, record)
    except ProxyError as error:
        if leg.fail_over:
            raise UpgradeFailed(error.code) from error
        record.note = error.code
        record.error = error.message
        return error.to_response()

    chosen = upstream_ws.protocol
    # aiohttp's server reads only the first Sec-WebSocket-Protocol header; when the target
    # chose from a later one, the answer header is set by hand.
    first_offers = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    client_ws = web.WebSocketResponse(
        protocols=(chosen,) if chosen and chosen in first_offers else (),
        autoclose=False,
        autoping=False,
        max_msg_size=0,
        compress=deflate,
        timeout=CLOSE_TIMEOUT_S,
    )
    client_ws.headers.extend(_handshake_headers(handshake, upstream))
    if chosen and chosen not in first_offers:
        client_ws.headers["Sec-WebSocket-Protocol"] = chosen
    capture = record.capture
    tally = None if capture is None else WebSocketTally()
    carried = _BridgedWebSocket(client_ws, upstream_ws, tally)
    live.add(carried)
    try:
        await client_ws.prepare(request)
        record.status = 101
        record.first_byte_at = asyncio.get_running_loop().time()
        watch_up = watch_down = None
        if capture is not None and tally is not None:
            record.websocket = tally
            watch_up = DirectionWatch(capture, tally, to_target=True)
            watch_down = DirectionWatch(capture, tally, to_target=False)
        up = asyncio.create_task(_pump(client_ws, upstream_ws, watch_up), name="ws-client-to-target")
        down = asyncio.create_task(_pump(upstream_ws, client_ws, watch_down), name="ws-target-to-client")
        pumps: set[asyncio.Task[Any]] = {up, down}
        try:
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            # One side finished its close; the other sees CLOSING at once, bounded anyway.
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        for task in pumps:
            if not task.cancelled() and task.exception() is not None:
                log.debug("websocket pump ended: %r", task.exception())
    finally:
        live.discard(carried)
        if tally is not None and client_ws.close_code is None:
            first_close(tally, "client", CLOSE_ABNORMAL)
        # The client gone without a close handshake (the handler cancelled when its connection
        # dropped): the target hears its peer was lost, not a normal 1000 close.
        await upstream_ws.close(code=CLOSE_PEER_LOST if client_ws.close_code is None else 1000)
        if not client_ws.closed and client_ws.prepared:
            await client_ws.close(code=CLOSE_PEER_LOST)
    return client_ws
