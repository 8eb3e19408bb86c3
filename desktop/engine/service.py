"""The running proxy: listener sockets, the request entry point and the active target.

Runs on one event loop (the controller's thread, or a test's loop) and knows nothing of
threads, files or UI. It uses aiohttp's low-level server rather than an Application: there is
one handler and no routing, and the low-level server lets us replace aiohttp's error page,
which quotes the offending request bytes (a key, possibly) back to the client and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import replace
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.http_exceptions import InvalidURLError, LineTooLong, TransferEncodingError
from aiohttp.web_protocol import RequestHandler

from desktop import __version__
from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.accesslog import log_request, own_answer_bytes
from desktop.engine.condition import TargetCondition, classify, credentials_of, describe
from desktop.engine.errors import ProxyError, RequestRefused
from desktop.engine.forward import RequestRecord, bad_request_body, forward_http
from desktop.engine.guard import (
    RequestGuard,
    bad_host,
    bad_transfer_encoding,
    both_framings,
    conflicting_lengths,
    invalid_length,
    unencoded_target,
    unknown_method,
)
from desktop.engine.headers import is_websocket_upgrade
from desktop.engine.localtoken import LocalTokenCheck, header_rules, preflight_answer
from desktop.engine.upstream import Upstream
from desktop.engine.websocket import OpenWebSocket, carry_websocket
from desktop.redaction import display_target, redact_url, register_secrets

__all__ = ["HEALTH_PATH", "RESERVED_PREFIX", "ListenError", "ProxyService", "describe_target_change", "host_port"]

log = logging.getLogger("trayproxy.service")

# Paths under this prefix are answered by the proxy and never forwarded.
RESERVED_PREFIX = "/__trayproxy/"
HEALTH_PATH = RESERVED_PREFIX + "health"
# How long to wait for whoever holds our port to say whether it is a TrayProxy.
PROBE_TIMEOUT_S = 1.0
# Idle client keep-alive: long enough for a tool's next request, short enough to free sockets.
CLIENT_KEEPALIVE_S = 75.0
# The shortest wait before connections still open at stop are cut: aiohttp takes 0 as "no
# limit", and what outlived the grace period has had its time.
MIN_CUT_WAIT_S = 0.01


class ListenError(Exception):
    """The listener could not be opened; the message says why in plain words. ``port_taken``:
    another program (not a TrayProxy) holds the port, so choosing another one is the way out."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


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


def _stopping_answer() -> web.StreamResponse:
    return ProxyError("TrayProxy is stopping", code="stopping", status=503).to_response()


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


class _ProxyServer(web.Server):
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


class ProxyService:
    """The proxy on the current event loop: ``start``, ``set_target``, ``stop``."""

    def __init__(
        self,
        settings: ProxySettings,
        target: Target,
        *,
        resolver: AbstractResolver | None = None,
        on_condition: Callable[[TargetCondition], None] | None = None,
    ) -> None:
        """``on_condition`` is called on the loop when a target's answers change kind (a key
        rejected, rate limited, unreachable, fine again); it must return quickly."""
        self.settings = settings
        self._on_condition = on_condition
        self._resolver = resolver
        self._guard = RequestGuard(
            allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
        )
        # None unless clients must send the local access token ([security] require_token).
        self._token_check = LocalTokenCheck.for_settings(settings)
        self._target = target
        self._upstream: Upstream | None = None
        self._runner: web.ServerRunner | None = None
        self._server: _ProxyServer | None = None
        self._sites: list[web.TCPSite] = []
        # Open WebSockets, so stop can tell both peers of each 1001.
        self._websockets: set[OpenWebSocket] = set()
        self._stopping = False
        self._closing: set[asyncio.Task[None]] = set()
        self._access_log = settings.access_log
        self.addresses: list[tuple[str, int]] = []
        self.requests_total = 0
        self.requests_active = 0
        # Set when the last open request ends, for stop() to wait on.
        self._idle = asyncio.Event()

    @property
    def target(self) -> Target:
        """The target new requests go to."""
        return self._target

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        return self.addresses[0][1] if self.addresses else self.settings.port

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Open the target's pool and the listeners; raise ListenError if a port is taken."""
        if self._runner is not None:
            return
        self._stopping = False
        register_secrets(self._target.secrets())
        self._upstream = self._new_upstream(self._target)
        server = self._server = _ProxyServer(
            self._handle,
            handler_cancellation=True,  # a client that leaves cancels its upstream request
            access_log=None,  # our own access line, see accesslog.py
            auto_decompress=False,  # request bodies pass through as sent
            keepalive_timeout=CLIENT_KEEPALIVE_S,
            lingering_time=0,  # do not read an unread body after answering; just close
            max_field_size=HEADER_FIELD_LIMIT,
            max_line_size=REQUEST_LINE_LIMIT,
        )
        # stop() cuts what outlives the grace period itself; by the runner's cleanup nothing is left.
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=MIN_CUT_WAIT_S)
        await runner.setup()
        self._runner = runner
        try:
            await self._listen(runner)
        except BaseException:
            await self.stop(grace_s=0)
            raise
        for host, port in self.addresses:
            log.info("listening on http://%s", host_port(host, port))

    async def _listen(self, runner: web.ServerRunner) -> None:
        port = self.settings.port
        self.addresses = []
        for index, host in enumerate(self.settings.hosts):
            site = web.TCPSite(runner, host, port)
            known = len(runner.addresses)
            try:
                await site.start()
            except OSError as exc:
                if index > 0 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    # No IPv6 loopback on this machine: IPv4 alone is all clients can use.
                    log.debug("not listening on %s: %s", host, exc.strerror)
                    continue
                raise await _listen_error(host, port, exc) from exc
            self._sites.append(site)
            # The runner lists its sites' socket addresses in the order they started.
            bound = int(runner.addresses[known][1])
            self.addresses.append((host, bound))
            # With port 0 the first address picks the port; the others use the same one.
            port = bound

    def set_policy(self, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]) -> None:
        """Use new Host and Origin allowlists from the next request on (a config reload)."""
        self.settings = replace(self.settings, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
        self._guard = RequestGuard(allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)

    def set_local_token(self, required: bool, token: Secret | None) -> None:
        """Ask clients for ``token`` as their API key from the next request on, or for nothing
        when not ``required`` (a config reload, a rotated token)."""
        self.settings = replace(self.settings, require_token=required, local_token=token)
        self._token_check = LocalTokenCheck.for_settings(self.settings)
        if self._upstream is not None:
            self._upstream.rules = header_rules(self._target, token_required=required)

    def _new_upstream(self, target: Target) -> Upstream:
        upstream = Upstream(target, resolver=self._resolver)
        if self._token_check is not None:
            # The client's credential headers hold the local token: they must not reach the target.
            upstream.rules = header_rules(target, token_required=True)
        return upstream

    def set_target(self, target: Target) -> None:
        """Send new requests to ``target``; requests already open finish on the old one."""
        if target == self._target:
            return
        register_secrets(target.secrets())
        self._target = target
        if self._upstream is None:
            return
        old, self._upstream = self._upstream, self._new_upstream(target)
        old.retired = True
        if old.active == 0:
            self._close_upstream(old)
        log.info("%s", describe_target_change(old.target, target, port=self.port))

    def _close_upstream(self, upstream: Upstream) -> None:
        task = asyncio.get_running_loop().create_task(upstream.close(), name="close-upstream")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def stop_listening(self) -> None:
        """Close the listening sockets, so another service can take their address (a listen
        address edited in the config); connections already accepted carry on until ``stop``."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        self.addresses = []

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop listening, let open requests finish within the grace period, close pools."""
        runner, self._runner = self._runner, None
        # No new connections, and no new WebSockets on kept-alive ones (see _dispatch), before
        # the open ones are told 1001: one opened meanwhile would be cut without it.
        self._stopping = True
        if runner is not None:
            # Stop accepting first, then wait for open requests ourselves: aiohttp's cleanup
            # closes every connection at once, which drops a request body still arriving.
            for site in list(runner.sites):
                await site.stop()
        if self._websockets:
            await asyncio.gather(*(ws.going_away() for ws in list(self._websockets)), return_exceptions=True)
        if runner is not None:
            grace = self.settings.stop_grace_s if grace_s is None else grace_s
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            if self.requests_active:
                self._idle.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), grace)
            server = self._server
            if server is not None:
                # What is still open after the grace period is cut, as the runner's cleanup
                # would (idle connections told to close, then a bounded wait), bounded by what
                # is left of the grace period instead of a wait fixed when the runner was made.
                await asyncio.sleep(0)
                server.pre_shutdown()
                await server.shutdown(max(MIN_CUT_WAIT_S, deadline - loop.time()))
            await runner.cleanup()
            if server is not None:
                server.abort_connections()
        self._sites.clear()
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            await upstream.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.addresses = []

    def health(self, *, asked_by_request: bool = False) -> dict[str, object]:
        """The status document served at HEALTH_PATH; the request asking for it is not counted
        (an idle proxy says 0 open requests, not 1)."""
        own = 1 if asked_by_request else 0
        return {
            "app": "trayproxy",
            "version": __version__,
            "pid": os.getpid(),
            "target": {"name": redact_url(self._target.name), "url": redact_url(self._target.url)},
            "requests_active": self.requests_active - own,
            "requests_total": self.requests_total,
        }

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        record = RequestRecord()
        self.requests_total += 1
        self.requests_active += 1
        try:
            response = await self._dispatch(request, record)
            if not record.status:
                record.status = response.status
            if not response.prepared:  # our own answer: aiohttp sends it after this returns
                record.bytes_down = own_answer_bytes(request.method, response)
            return response
        except asyncio.CancelledError:
            # Cancelled: the client's connection closed, or the stop grace period ran out.
            record.note = record.note or ("cut at stop" if self._stopping else "client went away")
            raise
        finally:
            self.requests_active -= 1
            if not self.requests_active:
                self._idle.set()
            if self._access_log:
                log_request(request, record, started=started, ended=loop.time())

    async def _dispatch(self, request: web.BaseRequest, record: RequestRecord) -> web.StreamResponse:
        refusal = self._guard.check(request)
        if refusal is not None:
            record.note = refusal.code
            return refusal.to_response()
        if request.raw_path.startswith(RESERVED_PREFIX):
            return self._answer_reserved(request)  # the health check stays open
        token_check = self._token_check
        if token_check is not None:
            preflight = preflight_answer(request)
            if preflight is not None:
                record.note = "preflight"
                return preflight
            denied = token_check.check(request)
            if denied is not None:
                record.note = denied.code
                return denied.to_response()
        upstream = self._upstream
        if upstream is None:
            return _stopping_answer()
        upstream.active += 1
        record.target = upstream.label
        try:
            if is_websocket_upgrade(request.raw_headers):
                if self._stopping:
                    return _stopping_answer()
                return await carry_websocket(
                    request, upstream, record, self._websockets, token_required=token_check is not None
                )
            return await forward_http(request, upstream, record)
        finally:
            upstream.active -= 1
            if upstream.retired and upstream.active == 0:
                self._close_upstream(upstream)
            kind = classify(record.status, record.note)
            if kind is not None and kind != upstream.condition:
                upstream.condition = kind
                self._report_condition(upstream, kind, record)

    def _report_condition(self, upstream: Upstream, kind: Any, record: RequestRecord) -> None:
        target = upstream.target
        credentials = credentials_of(target, token_required=self.settings.require_token)
        condition = describe(upstream.label, kind, record.status, record.error, credentials=credentials)
        if kind != "ok":
            log.warning("%s", condition.message)
        if self._on_condition is not None:
            try:
                self._on_condition(condition)
            except Exception:
                log.exception("condition listener failed")

    def _answer_reserved(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            document = self.health(asked_by_request=True)
            return web.Response(body=json.dumps(document).encode(), content_type="application/json")
        return ProxyError("No such TrayProxy endpoint", code="not_found", status=404).to_response()


def describe_target_change(old: Target, new: Target, *, port: int) -> str:
    """The log line for ``new`` taking over from ``old`` on ``port``: another target is a
    switch; the same one (its entry edited, a new key from its key command) says what changed.
    Header values and the outgoing proxy may hold a key or password: only their change is told."""
    if old.display_name != new.display_name:
        return f"target is now {display_target(new)}"
    changes = []
    if old.url != new.url:
        changes.append(f"url is now {redact_url(new.url)}")
    before = {name.lower(): (name, value) for name, value in old.add_headers}
    after = {name.lower(): (name, value) for name, value in new.add_headers}
    changes += [f"adds header {after[name][0]}" for name in after.keys() - before.keys()]
    changes += [f"no longer adds header {before[name][0]}" for name in before.keys() - after.keys()]
    changes += [
        f"header {after[name][0]} has a new value"
        for name in before.keys() & after.keys()
        if before[name][1] != after[name][1]
    ]
    if old.strip_headers != new.strip_headers:
        changes.append("strips " + (", ".join(sorted(new.strip_headers)) or "no headers"))
    if old.connect_timeout_s != new.connect_timeout_s:
        changes.append(f"connect timeout is now {new.connect_timeout_s:g} s")
    if old.read_timeout_s != new.read_timeout_s:
        changes.append(f"read timeout is now {new.read_timeout_s:g} s")
    if (old.verify_tls, old.ca_bundle) != (new.verify_tls, new.ca_bundle):
        trust = new.ca_bundle or "the system's CAs"
        changes.append(f"TLS verified against {trust}" if new.verify_tls else "TLS not verified")
    if old.keep_host != new.keep_host:
        changes.append("keeps the client's Host" if new.keep_host else "sends the target's Host")
    if old.proxy != new.proxy:
        changes.append("outgoing proxy changed")
    return f"target {display_target(new)} on port {port}: {', '.join(changes) or 'settings changed'}"


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:8000``, or ``[::1]:8000``: an address as URLs and people write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _listen_error(host: str, port: int, exc: OSError) -> ListenError:
    where = host_port(host, port)
    if exc.errno == errno.EADDRINUSE:
        if await _is_trayproxy(host, port):
            return ListenError(f"TrayProxy is already running on {where}")
        return ListenError(
            f"Port {port} on {host} is already in use by another program; choose another port", port_taken=True
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ListenError(f"Not allowed to listen on {where} (ports below 1024 need admin rights)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{host} is not an address of this machine")
    return ListenError(f"Cannot listen on {where}: {exc.strerror or exc}")


async def _is_trayproxy(host: str, port: int) -> bool:
    """Ask whoever holds the port for our health document (raw HTTP, no client session)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                hostname = f"[{host}]" if ":" in host else host
                writer.write(
                    f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: {hostname}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = await reader.read(4096)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return b'"app": "trayproxy"' in data
