"""The running proxy: listener sockets, the request entry point and the active target.

Runs on one event loop (the controller's thread, or a test's loop) and knows nothing of
threads, files or UI. The HTTP server it runs, with the connection handler whose error answers
echo nothing back, is in server.py; how an address is written and why one could not be opened,
in addresses.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractResolver

from desktop import __version__
from desktop.config.model import ProxySettings, Routing, Secret, Target
from desktop.engine.accesslog import log_request, own_answer_bytes
from desktop.engine.addresses import HEALTH_PATH, RESERVED_PREFIX, host_port, listen_error
from desktop.engine.capture import CaptureTap, ExchangeCapture, ExchangeEnd, RequestHead
from desktop.engine.condition import TargetCondition, classify, credentials_of, describe
from desktop.engine.cooldowns import Cooldowns
from desktop.engine.errors import ProxyError
from desktop.engine.failover import FailoverEvent, carry_routed_websocket, forward_routed
from desktop.engine.forward import (
    NO_BODY,
    RequestBody,
    RequestRecord,
    forward_http,
    open_upstream,
    pass_response,
    take_body,
)
from desktop.engine.guard import RequestGuard
from desktop.engine.headers import is_websocket_upgrade
from desktop.engine.localtoken import LocalTokenCheck, header_rules, preflight_answer
from desktop.engine.recall import AnswerRecall, Replay
from desktop.engine.replay import (
    WEBSOCKET_UNRECORDED,
    BothCaptures,
    client_path,
    offline_miss,
    recall_request,
    send_replay,
    unrecordable_reason,
)
from desktop.engine.server import HEADER_FIELD_LIMIT, REQUEST_LINE_LIMIT, ProxyServer
from desktop.engine.upstream import Upstream
from desktop.engine.websocket import OpenWebSocket, carry_websocket
from desktop.redaction import display_target, redact_url, register_secrets, url_secrets
from desktop.routing import Route, RouteTable, TargetClaims

__all__ = ["OwnPages", "ProxyService", "describe_target_change"]

log = logging.getLogger("trayproxy.service")

# A held body larger than this is routed in a worker thread when the model is read from it.
ROUTE_IN_THREAD_BYTES = 64 * 1024
# Idle client keep-alive: long enough for a tool's next request, short enough to free sockets.
CLIENT_KEEPALIVE_S = 75.0
# The shortest wait before connections still open at stop are cut: aiohttp takes 0 as "no
# limit", and what outlived the grace period has had its time.
MIN_CUT_WAIT_S = 0.01


class OwnPages(Protocol):
    """Pages the proxy serves itself under ``prefix`` (within RESERVED_PREFIX: the inspector).
    ``stopping`` is set when the listener stops: a push stream must end at once.

    ``entry`` is the one path a top-level navigation from another site may reach (the guard
    refuses every other cross-site request): the one-time link a local file opens, which a
    browser sends as cross-site. It spends no key, and without a valid code it opens nothing."""

    prefix: str
    entry: str

    async def __call__(self, request: web.BaseRequest, stopping: asyncio.Event) -> web.StreamResponse: ...


def _is_entry(request: web.BaseRequest, path: str, pages: OwnPages) -> bool:
    """Whether ``request`` is a person's browser opening ``pages``' entry link (a top-level
    GET navigation; no script can make one that reads the answer)."""
    headers = request.headers
    return (
        path == pages.entry
        and request.method == "GET"
        and headers.get("Sec-Fetch-Mode") == "navigate"
        and headers.get("Sec-Fetch-Dest") == "document"
    )


def _exchange_end(record: RequestRecord, response: web.StreamResponse | None, ended: float) -> ExchangeEnd:
    """How the request ended, for its capture."""
    own_body = None
    if response is not None and not response.prepared and isinstance(response, web.Response):
        body = response.body
        own_body = body if isinstance(body, bytes) else None
    return ExchangeEnd(
        status=record.status,
        note=record.note,
        error=record.error,
        target=record.target,
        chosen_by=record.chosen_by,
        attempts=tuple(record.attempts),
        bytes_down=record.bytes_down,
        own_body=own_body,
        websocket=record.websocket,
        ended=ended,
        cache=record.cache,
    )


def _register_secrets_of(target: Target) -> None:
    """Make the keys ``target`` sends, and one written into its URL, known to the redactor."""
    register_secrets((*target.secrets(), *url_secrets(target.url)))


def _recorded_name(target: Target, label: str) -> str:
    """The name ``target``'s answers are recorded under and its offline misses say: its name
    from the config, else its ``label`` (serve --target URL names a target by its URL, which
    the label shows with a key in it masked)."""
    return target.name if target.name and "://" not in target.name else label


def _stopping_answer() -> web.StreamResponse:
    return ProxyError("TrayProxy is stopping", code="stopping", status=503).to_response()


class ProxyService:
    """The proxy on the current event loop: ``start``, ``set_target``, ``stop``."""

    def __init__(
        self,
        settings: ProxySettings,
        target: Target,
        *,
        routing: Routing | None = None,
        resolver: AbstractResolver | None = None,
        on_condition: Callable[[TargetCondition], None] | None = None,
        on_failover: Callable[[FailoverEvent], None] | None = None,
        cooldowns: Cooldowns | None = None,
        tap: CaptureTap | None = None,
        pages: OwnPages | None = None,
        recall: AnswerRecall | None = None,
    ) -> None:
        """``routing``: routes and failover beyond ``target`` (None: everything to ``target``).
        ``on_condition`` is called on the loop when a target's answers change kind (a key
        rejected, rate limited, unreachable, fine again), ``on_failover`` when a request fails
        over to another target; both must return quickly. ``cooldowns``: which targets are tried
        last for now, shared with the other listeners of the loop. ``recall``: the recording of
        answers, for targets whose ``cache`` mode is not "off" (None: every mode acts as off)."""
        self.settings = settings
        self._on_condition = on_condition
        self._on_failover = on_failover
        self._cooldowns = cooldowns if cooldowns is not None else Cooldowns()
        self._routing = routing
        # The upstreams of the targets the routes name besides ``target``, by name.
        self._routed: dict[str, Upstream] = {}
        self._resolver = resolver
        self._guard = RequestGuard(
            allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
        )
        # None unless clients must send the local access token ([security] require_token).
        self._token_check = LocalTokenCheck.for_settings(settings)
        self._target = target
        self._upstream: Upstream | None = None
        self._runner: web.ServerRunner | None = None
        self._server: ProxyServer | None = None
        self._sites: list[web.TCPSite] = []
        # Open WebSockets, so stop can tell both peers of each 1001.
        self._websockets: set[OpenWebSocket] = set()
        self._stopping = False
        # Set at stop, so the own pages' push streams end at once instead of holding it up.
        self._stop_event = asyncio.Event()
        self.tap = tap
        self.pages = pages
        self.recall = recall
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
    def routing(self) -> Routing | None:
        """The routes new requests follow (None: all go to the target)."""
        return self._routing

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
        self._stop_event.clear()
        _register_secrets_of(self._target)
        self._upstream = self._new_upstream(self._target)
        self.set_routing(self._routing)
        server = self._server = ProxyServer(
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
                raise await listen_error(host, port, exc) from exc
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
        for upstream in (self._upstream, *self._routed.values()):
            if upstream is not None:
                upstream.rules = header_rules(upstream.target, token_required=required)

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
        _register_secrets_of(target)
        self._target = target
        if self._upstream is None:
            return
        old, self._upstream = self._upstream, self._new_upstream(target)
        self._retire_upstream(old)
        log.info("%s", describe_target_change(old.target, target, port=self.port))

    def set_routing(self, routing: Routing | None) -> None:
        """Route new requests by ``routing`` (None: all to the target); requests already open
        finish where they are. A routed target whose settings did not change keeps its pool."""
        self._routing = routing
        if self._upstream is None:
            return  # not started: start() opens the pools
        wanted = {target.name: target for target in routing.targets} if routing is not None else {}
        for name, upstream in list(self._routed.items()):
            if wanted.get(name) != upstream.target:
                del self._routed[name]
                self._retire_upstream(upstream)
        for name, target in wanted.items():
            if name not in self._routed:
                _register_secrets_of(target)
                self._routed[name] = self._new_upstream(target)

    def _retire_upstream(self, upstream: Upstream) -> None:
        upstream.retired = True
        if upstream.active == 0:
            self._close_upstream(upstream)

    def _upstream_named(self, name: str) -> Upstream:
        """The upstream of the target the routes call ``name``: a routed one, else the
        listener's own target (the table's default)."""
        routed = self._routed.get(name)
        if routed is not None:
            return routed
        assert self._upstream is not None
        return self._upstream

    def _release(self, upstream: Upstream) -> None:
        """A request on ``upstream`` ended: close it if it was retired and this was its last."""
        upstream.active -= 1
        if upstream.retired and upstream.active == 0:
            self._close_upstream(upstream)

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
        self._stop_event.set()
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
        routed, self._routed = self._routed, {}
        for closing in (upstream, *routed.values()):
            if closing is not None:
                await closing.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.addresses = []

    def health(self) -> dict[str, object]:
        """The status document served at HEALTH_PATH (the proxy's own pages are not counted)."""
        return {
            "app": "trayproxy",
            "version": __version__,
            "pid": os.getpid(),
            "target": {"name": redact_url(self._target.name), "url": redact_url(self._target.url)},
            "requests_active": self.requests_active,
            "requests_total": self.requests_total,
        }

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.raw_path.startswith(RESERVED_PREFIX):
            # The proxy's own pages (health, the inspector) are neither counted, listed nor
            # logged but at debug: an inspector open in a tab must not fill its own list.
            return await self._answer_own(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        record = RequestRecord()
        self.requests_total += 1
        self.requests_active += 1
        response: web.StreamResponse | None = None
        if self.tap is not None:
            record.capture = self._begin_capture(request, started)
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
            ended = loop.time()
            capture = record.capture
            end = None if capture is None else self._verdict(record, _exchange_end(record, response, ended))
            if self._access_log:
                log_request(request, record, started=started, ended=ended)
            if capture is not None and end is not None:
                try:
                    capture.end(end)
                except Exception:
                    log.exception("capture tap failed")

    def _begin_capture(self, request: web.BaseRequest, started: float) -> ExchangeCapture | None:
        assert self.tap is not None
        version = request.version
        head = RequestHead(
            method=request.method,
            raw_path=request.raw_path,
            version=f"HTTP/{version.major}.{version.minor}",
            raw_headers=request.raw_headers,
            port=self.port,
            websocket=is_websocket_upgrade(request.raw_headers),
            started=started,
        )
        try:
            return self.tap.begin(head)
        except Exception:
            log.exception("capture tap failed")
            return None

    @staticmethod
    def _verdict(record: RequestRecord, end: ExchangeEnd) -> ExchangeEnd:
        """``end``, and the record, saying the answer is not kept when its recorder declines it:
        the access line and the inspector then say "not recorded" and why, instead of "miss"
        for an answer the next identical request will not find."""
        recorder = record.recorder
        if recorder is None:
            return end
        try:
            why = recorder.declines(end)
        except Exception:
            log.exception("the recording of answers failed")
            return end
        if not why:
            return end
        record.cache, record.cache_note = "unkept", why
        return replace(end, cache="unkept", cache_note=why)

    async def _answer_own(self, request: web.BaseRequest) -> web.StreamResponse:
        """The own pages (logged at debug only), the health check (open to any client the guard
        lets in) and a 404 for any other reserved path, those two with an access line."""
        path = request.raw_path.split("?", 1)[0]
        refusal = self._guard.check(request)
        pages = self.pages
        if pages is not None and path.startswith(pages.prefix):
            if refusal is not None and refusal.code == "cross_site_refused" and _is_entry(request, path, pages):
                refusal = None
            if refusal is not None:
                log.debug("%s %s refused: %s", request.method, path, refusal.code)
                return refusal.to_response()
            response = await pages(request, self._stop_event)
            log.debug("%s %s %d", request.method, path, response.status)
            return response
        started = asyncio.get_running_loop().time()
        record = RequestRecord()
        if refusal is not None:
            record.note = refusal.code
            response = refusal.to_response()
        elif path == HEALTH_PATH and request.method in ("GET", "HEAD"):
            response = web.Response(body=json.dumps(self.health()).encode(), content_type="application/json")
        else:
            response = ProxyError("No such TrayProxy endpoint", code="not_found", status=404).to_response()
        if self._access_log:  # a second TrayProxy's probe, a script's check: worth a line
            record.status = response.status
            record.bytes_down = own_answer_bytes(request.method, response)
            log_request(request, record, started=started, ended=asyncio.get_running_loop().time())
        return response

    async def _dispatch(self, request: web.BaseRequest, record: RequestRecord) -> web.StreamResponse:
        refusal = self._guard.check(request)
        if refusal is not None:
            record.note = refusal.code
            return refusal.to_response()
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
        routing = self._routing
        if routing is not None:
            return await self._dispatch_routed(request, record, routing)
        upgrade = is_websocket_upgrade(request.raw_headers)
        if upstream.target.cache != "off" and self.recall is not None:
            if not upgrade:
                return await self._forward_recalled(request, record, upstream)
            if upstream.target.cache == "offline":  # a WebSocket is never recorded: nothing to replay
                record.target = upstream.label
                name = _recorded_name(upstream.target, upstream.label)
                return self._offline_miss(request, record, name, WEBSOCKET_UNRECORDED)
        upstream.active += 1
        record.target = upstream.label
        try:
            if upgrade:
                if self._stopping:
                    return _stopping_answer()
                return await carry_websocket(
                    request, upstream, record, self._websockets, token_required=token_check is not None
                )
            return await forward_http(request, upstream, record)
        finally:
            self._release(upstream)
            self._note_condition(upstream, record.status, record.note, record.error)

    async def _dispatch_routed(
        self, request: web.BaseRequest, record: RequestRecord, routing: Routing
    ) -> web.StreamResponse:
        """Send ``request`` where the routes say, failing over as failover.py says."""
        upgrade = is_websocket_upgrade(request.raw_headers)
        if upgrade and self._stopping:
            return _stopping_answer()
        if not upgrade and not routing.table.reads_models and not self._recalls(routing):
            # Routed by its path alone: a route with no fallback goes out as a request without
            # routes does (the body streams or is held as usual), only to its target and path.
            raw_path, _, query = request.raw_path.partition("?")
            route = routing.table.route(raw_path, query, None, upgrade=False)
            if not route.fallbacks:
                record.chosen_by = route.chosen_by
                upstream = self._upstream_named(route.target)
                upstream.active += 1
                record.target = upstream.label
                try:
                    return await forward_http(
                        request, upstream, record, path=route.path, local_prefix=route.prefix
                    )
                finally:
                    self._release(upstream)
                    self._note_condition(upstream, record.status, record.note, record.error)
        try:
            body = NO_BODY if upgrade else await take_body(request, record.capture)
        except ProxyError as refused:  # the body stopped arriving, or its chunks were broken
            record.note = refused.code
            return refused.to_response()
        # The routes and every target's pool as they are once the body is in (an edit or a
        # switch may have come while it arrived), taken together and held open until the
        # request ends: it finishes where it began, even when the routes or the target change
        # while it waits (routing in a thread, a Retry-After, a slow first attempt), and never
        # on a pool closed under it.
        current = self._routing
        assert self._upstream is not None  # _dispatch checked: not stopped
        default_pool = self._upstream
        pools = {self._target.name: default_pool, **self._routed}
        used = list(dict.fromkeys(pools.values()))

        def upstream_for(name: str) -> Upstream:
            # A name the routes give is the target's or a routed one's (set together on a
            # switch); the target's own pool stands in should one ever not be.
            return pools.get(name, default_pool)

        for upstream in used:
            upstream.active += 1
        try:
            if current is None:  # the routes are gone: to the target, as without them
                routes: Sequence[Route] = (Route(self._target.name, request.raw_path, "default"),)
                routing = Routing(
                    RouteTable.build([TargetClaims(self._target.name)], default=self._target.name)
                )
            else:
                routing = current
                routes = await self._attempts(routing.table, request.raw_path, body, upgrade=upgrade)
        except BaseException:
            for upstream in used:
                self._release(upstream)
            raise
        record.chosen_by = routes[0].chosen_by
        first = upstream_for(routes[0].target).target
        try:
            if upgrade and first.cache == "offline" and self.recall is not None:
                name = _recorded_name(first, upstream_for(routes[0].target).label)
                return self._offline_miss(request, record, name, WEBSOCKET_UNRECORDED)
            if not upgrade and first.cache != "off" and self.recall is not None:
                label = upstream_for(routes[0].target).label
                path = client_path(request, routes[0].prefix)
                recalled = await self._recall(request, record, first, label, path, body)
                if recalled is not None:
                    return recalled
            if upgrade:
                return await carry_routed_websocket(
                    request,
                    record,
                    routes,
                    self._websockets,
                    token_required=self._token_check is not None,
                    upstream_for=upstream_for,
                    routing=routing,
                    cooldowns=self._cooldowns,
                    on_failover=self._report_failover,
                )
            return await forward_routed(
                request,
                record,
                routes,
                body,
                upstream_for=upstream_for,
                routing=routing,
                cooldowns=self._cooldowns,
                on_failover=self._report_failover,
            )
        finally:
            for upstream in used:
                self._release(upstream)
            for upstream, status, note, error in record.outcomes or ():
                self._note_condition(upstream, status, note, error)
            if record.answered_by is not None:
                self._note_condition(record.answered_by, record.status, record.note, record.error)

    def _recalls(self, routing: Routing) -> bool:
        """True when a target of ``routing`` has its answers recorded (its requests are held
        and looked up, so never sent down the path-only fast path)."""
        if self.recall is None:
            return False
        return self._target.cache != "off" or any(target.cache != "off" for target in routing.targets)

    async def _forward_recalled(
        self, request: web.BaseRequest, record: RequestRecord, upstream: Upstream
    ) -> web.StreamResponse:
        """``request`` to ``upstream``'s target, whose answers are recorded: from the recording
        when it has the answer, else to the target with the answer recorded as it passes."""
        assert self.recall is not None
        target = upstream.target
        record.target = upstream.label
        upstream.active += 1
        try:
            why = unrecordable_reason(request)
            if why is not None:
                if target.cache == "offline":
                    return self._offline_miss(request, record, _recorded_name(target, upstream.label), why)
                record.cache = "bypass"
                return await forward_http(request, upstream, record)
            try:
                body = await take_body(request, record.capture)
            except ProxyError as refused:  # the body stopped arriving, or its chunks were broken
                record.note = refused.code
                return refused.to_response()
            recalled = await self._recall(request, record, target, upstream.label, request.raw_path, body)
            if recalled is not None:
                return recalled
            try:
                answer = await open_upstream(request, upstream, body, path=request.raw_path)
            except ProxyError as exc:
                record.note = exc.code
                record.error = exc.message
                return exc.to_response()
            return await pass_response(request, upstream, record, answer)
        finally:
            self._release(upstream)
            if record.cache not in ("hit", "offline-miss"):  # a recording says nothing of the target now
                self._note_condition(upstream, record.status, record.note, record.error)

    async def _recall(
        self,
        request: web.BaseRequest,
        record: RequestRecord,
        first: Target,
        label: str,
        raw_path: str,
        body: RequestBody,
    ) -> web.StreamResponse | None:
        """The answer from the recording of ``first`` (the first target, whose ``label`` the
        access line shows) for ``request`` at ``raw_path`` (the client's, a route's prefix cut)
        when it has one, or the offline miss; None to send the request on, with a recorder
        told of the answer when one should be kept."""
        assert self.recall is not None
        name = _recorded_name(first, label)
        record.target = label  # the offline miss's too: its row and line name the target asked
        if body.held is None and body.streamed is not None:  # a body that cannot be held
            if first.cache == "offline":
                return self._offline_miss(request, record, name, unrecordable_reason(request) or "")
            record.cache = "bypass"
            return None
        # A target named by its URL is recorded under the label: a key in the URL never reaches
        # the file, `cache stats` or an export.
        asked = recall_request(request, first.cache, name, label, raw_path, body.held)
        found = await self.recall.lookup(asked)
        if isinstance(found, Replay):
            record.cache = "hit"
            return await send_replay(request, record, found)
        if found is None:
            if first.cache == "offline":
                asked_not_to = "no-store" in request.headers.get("Cache-Control", "").lower()
                why = (
                    "it was sent with Cache-Control: no-store, which is never answered from the recording"
                    if asked_not_to
                    else await self.recall.explain_miss(asked)
                )
                return self._offline_miss(request, record, name, why)
            record.cache = "bypass"  # neither answered from the recording nor recorded
            return None
        record.cache = "miss" if first.cache == "replay" else "record"
        record.recorder = found
        record.capture = BothCaptures.of(record.capture, found)
        return None

    @staticmethod
    def _offline_miss(request: web.BaseRequest, record: RequestRecord, target: str, why: str = "") -> web.StreamResponse:
        refused = offline_miss(request, target, why)
        record.cache = "offline-miss"
        record.note = refused.code
        record.error = refused.message
        return refused.to_response()

    @staticmethod
    async def _attempts(
        table: RouteTable, raw_path: str, body: RequestBody, *, upgrade: bool
    ) -> Sequence[Route]:
        """``table.attempts`` for this request; in a worker thread for a large body read for
        its model (the JSON is parsed once more per rename: milliseconds the loop would not
        serve anyone else)."""
        path, _, query = raw_path.partition("?")
        if body.held is not None and len(body.held) > ROUTE_IN_THREAD_BYTES and table.reads_models:
            return await asyncio.to_thread(table.attempts, path, query, body.held, upgrade=upgrade)
        return table.attempts(path, query, body.held, upgrade=upgrade)

    def _note_condition(self, upstream: Upstream, status: int, note: str, error: str) -> None:
        """What ``upstream``'s answer (``status``, or the failure ``note``) says of its target."""
        kind = classify(status, note)
        if kind is not None and kind != upstream.condition:
            upstream.condition = kind
            self._report_condition(upstream, kind, status, error)

    def _report_failover(self, event: FailoverEvent) -> None:
        if event.next is not None:
            log.info("target %s failed (%s); trying %s", event.failed, event.cause, event.next)
        if self._on_failover is not None:
            try:
                self._on_failover(event)
            except Exception:
                log.exception("failover listener failed")

    def _report_condition(self, upstream: Upstream, kind: Any, status: int, error: str) -> None:
        target = upstream.target
        credentials = credentials_of(target, token_required=self.settings.require_token)
        condition = describe(upstream.label, kind, status, error, credentials=credentials)
        if kind != "ok":
            log.warning("%s", condition.message)
        if self._on_condition is not None:
            try:
                self._on_condition(condition)
            except Exception:
                log.exception("condition listener failed")


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
    if old.cache != new.cache:
        changes.append(f"cache is now {new.cache}")
    return f"target {display_target(new)} on port {port}: {', '.join(changes) or 'settings changed'}"
