"""Bridge a WebSocket between the client and the target.

The upstream handshake happens first, so the client is only accepted once the target has
accepted, and gets the subprotocol the target chose. Then two named pump tasks copy messages
each way: text, binary, ping and pong as they are, and a close frame's code and reason passed
on to the other side (RFC 6455 §7.4) instead of a generic 1000. Both ends run without size
limits, auto-ping or auto-close, so the bridge changes nothing the peers say to each other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from desktop.engine.errors import ProxyError, UpstreamUnreachable, map_client_error
from desktop.engine.forward import RequestRecord
from desktop.engine.headers import WEBSOCKET_HANDSHAKE, response_headers
from desktop.engine.upstream import Upstream

__all__ = ["bridge_websocket"]

log = logging.getLogger("trayproxy.websocket")

# A peer that does not answer our close frame within this long is cut.
CLOSE_TIMEOUT_S = 5.0
# 1011: the bridge lost the other side without a close frame to pass on (RFC 6455 §7.4.1).
CLOSE_PEER_LOST = 1011
# 1001: the proxy is stopping (RFC 6455 §7.4.1 "going away").
CLOSE_GOING_AWAY = 1001

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _offered_protocols(request: web.BaseRequest) -> list[str]:
    # RFC 6455 §11.3.4 lets a client repeat the header; every offer counts.
    return [
        p.strip()
        for header in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in header.split(",")
        if p.strip()
    ]


def _handshake_headers(upstream_ws: aiohttp.ClientWebSocketResponse, upstream: Upstream) -> CIMultiDict[str]:
    """The target's 101 headers (X-Request-Id and the like) minus the handshake's own."""
    raw = upstream_ws._response.raw_headers
    headers = response_headers(
        raw, target_prefix=upstream.prefix, base_path=upstream.base_path, local_base=""
    )
    for name in WEBSOCKET_HANDSHAKE:
        headers.popall(name, None)
    return headers


async def _pump(source: AnyWebSocket, sink: AnyWebSocket) -> None:
    """Copy messages from ``source`` to ``sink`` until either side closes."""
    while True:
        msg = await source.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif kind is WSMsgType.PING:
            await sink.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else 1000
            reason = (msg.extra or "").encode()
            # Pass the close on, wait for the far side's answer, then answer the near side
            # with the same code (the usual echo of a close frame).
            await sink.close(code=code, message=reason)
            await source.close(code=code, message=reason)
            return
        else:
            # CLOSING: the other pump is closing this socket; CLOSED/ERROR: the connection
            # dropped without a close frame, so tell the far side its peer is gone.
            if kind is not WSMsgType.CLOSING and not sink.closed:
                await sink.close(code=CLOSE_PEER_LOST, message=b"TrayProxy: peer connection lost")
            return


async def bridge_websocket(
    request: web.BaseRequest,
    upstream: Upstream,
    record: RequestRecord,
    live: dict[web.WebSocketResponse, aiohttp.ClientWebSocketResponse],
) -> web.StreamResponse:
    """Open the upstream WebSocket, accept the client's, and copy messages both ways."""
    headers = upstream.rules.apply(request.raw_headers, client_ip=request.remote or "", websocket=True)
    deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
    target = upstream.target.display_name
    try:
        upstream_ws = await upstream.session.ws_connect(
            upstream.url_for(request.raw_path),
            protocols=_offered_protocols(request),
            headers=headers,
            autoclose=False,
            autoping=False,
            max_msg_size=0,
            # Compress upstream only when the client asked for it on its side.
            compress=15 if deflate else 0,
            proxy=upstream.proxy,
            proxy_headers=upstream.proxy_headers,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
        )
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if 400 <= exc.status < 600 else 502
        error: ProxyError = UpstreamUnreachable(
            f"The target {target} refused the WebSocket upgrade (HTTP {exc.status})",
            code="websocket_refused",
            status=status,
        )
        record.note = error.code
        return error.to_response()
    except (TimeoutError, aiohttp.ClientError) as exc:
        error = map_client_error(exc, target=target)
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
    client_ws.headers.extend(_handshake_headers(upstream_ws, upstream))
    if chosen and chosen not in first_offers:
        client_ws.headers["Sec-WebSocket-Protocol"] = chosen
    live[client_ws] = upstream_ws
    try:
        await client_ws.prepare(request)
        record.status = 101
        record.first_byte_at = asyncio.get_running_loop().time()
        up = asyncio.create_task(_pump(client_ws, upstream_ws), name="ws-client-to-target")
        down = asyncio.create_task(_pump(upstream_ws, client_ws), name="ws-target-to-client")
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
        live.pop(client_ws, None)
        await upstream_ws.close()
        if not client_ws.closed and client_ws.prepared:
            await client_ws.close(code=CLOSE_PEER_LOST)
    return client_ws
