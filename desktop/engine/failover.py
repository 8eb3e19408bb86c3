"""Routed requests: the route table's choice, then failover that never hides a failure.

A listener with routes (``Routing``) sends each request where ``RouteTable.attempts`` says:
the chosen target first, then its fallbacks in order. The next one is tried only while nothing
has reached the client, and only for a failure the target owns:

- no answer: connection, DNS or TLS error, no headers within the read timeout;
- an answer of 429, 500, 502, 503, 504 or 529 (Anthropic's "overloaded"); a 429 whose
  ``Retry-After`` is within the bound asks the same target once more after that wait;
- for a target with a fallback left, a 200 whose first SSE event is an error, or an empty body
  where content was promised (answers.py says which): the status line waits for the first
  event so these can still fail over;
- a WebSocket upgrade the target refuses (no 101).

Once a byte has reached the client nothing is retried: a stream cut later ends as a broken
response, as it would without routes, and counts against its target. A body streamed to the
target (no Content-Length, or over 1 MiB) is never sent twice. When every target fails the
client gets the last answer a target gave, unchanged (a 429 keeps its Retry-After), or the last
proxy error when none answered. No header is added to any answer.

A target that fails ``failures_for_cooldown`` times in a row is tried last for ``cooldown_s``
(cooldowns.py, one record shared by the listeners of one loop); the listener's ``on_failover`` hears
each failover, for the tray to tell the user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web

from desktop.config.model import Routing
from desktop.engine.answers import first_bytes, retry_after_s
from desktop.engine.cooldowns import Cooldowns
from desktop.engine.errors import ProxyError, RequestRefused, map_client_error
from desktop.engine.forward import (
    PassThroughResponse,
    RequestBody,
    RequestRecord,
    open_upstream,
    pass_response,
)
from desktop.engine.headers import response_headers
from desktop.engine.upstream import Upstream
from desktop.engine.websocket import OpenWebSocket, UpgradeFailed, carry_websocket
from desktop.routing import Route

__all__ = [
    "FAILOVER_STATUSES",
    "FailoverEvent",
    "carry_routed_websocket",
    "forward_routed",
]

# Answers that mean "this target cannot serve it now" rather than "this request is wrong":
# rate limited, and the server errors a gateway or an overloaded model gives (529 is Anthropic's
# overloaded_error). 501 and 505 are about the request, so they pass through.
FAILOVER_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
# An earlier target's failed answer is kept (to give the client if every target fails) up to
# this size; error answers are far smaller.
MAX_KEPT_ANSWER_BYTES = 64 * 1024
# The cause of a failure after the first byte: the answer broke off on its way.
STREAM_CUT = "stream cut"
# Requests whose 200 is empty by nature, so an empty one is no failure.
_NO_CONTENT_METHODS = frozenset({"HEAD", "OPTIONS"})
# The longest a failed answer is read to keep it: one that drips (keep-alive pings on an error
# stream) must not hold the request; it is then not kept.
KEEP_ANSWER_S = 5.0


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One failover, as the tray tells it: ``failed`` (a target name) did not serve a request
    for ``cause`` (its status, or the proxy's error code) and ``next`` is tried (None when
    it was the last); ``cooling`` the targets now tried last, with the loop time each
    cool-down ends."""

    failed: str
    cause: str
    next: str | None
    cooling: tuple[tuple[str, float], ...]


@dataclass(slots=True)
class _KeptAnswer:
    """A failed answer read whole, for the client if no later target does better."""

    status: int
    reason: str | None
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    upstream: Upstream
    local_prefix: str


async def _keep(
    response: aiohttp.ClientResponse, upstream: Upstream, local_prefix: str, first: bytes = b""
) -> _KeptAnswer | None:
    """``response`` read whole (after ``first``) and released; None when it is too large to keep
    or breaks off."""
    try:
        body = first
        async with asyncio.timeout(KEEP_ANSWER_S):
            async for piece in response.content.iter_any():
                body += piece
                if len(body) > MAX_KEPT_ANSWER_BYTES:
                    return None
        return _KeptAnswer(
            response.status, response.reason, response.raw_headers, body, upstream, local_prefix
        )
    except (TimeoutError, aiohttp.ClientError):
        return None
    finally:
        response.release()


async def _send_kept(
    request: web.BaseRequest, kept: _KeptAnswer, record: RequestRecord
) -> web.StreamResponse:
    headers = response_headers(
        kept.raw_headers,
        target_prefix=kept.upstream.prefix,
        base_path=kept.upstream.base_path,
        local_base="http://" + (request.host or ""),
        local_prefix=kept.local_prefix,
    )
    response = PassThroughResponse(headers=headers, hold_headers=True, status=kept.status, reason=kept.reason)
    record.status = kept.status
    now = asyncio.get_running_loop().time()
    if record.capture is not None:
        record.capture.response(kept.status, kept.reason or "", headers, now)
        if kept.body:
            record.capture.chunk(kept.body, now)
    await response.prepare(request)
    record.first_byte_at = now
    record.bytes_down = len(kept.body)
    await response.write_eof(kept.body)
    return response


class _InFlight:
    """The attempt under way: its target, and how many attempts were noted before it."""

    __slots__ = ("label", "noted")

    def __init__(self) -> None:
        self.label: str | None = None
        self.noted = 0


async def forward_routed(
    request: web.BaseRequest,
    record: RequestRecord,
    routes: Sequence[Route],
    body: RequestBody,
    *,
    upstream_for: Callable[[str], Upstream],
    routing: Routing,
    cooldowns: Cooldowns,
    on_failover: Callable[[FailoverEvent], None],
) -> web.StreamResponse:
    """Send ``request`` along ``routes`` (the chosen target, then its fallbacks) until a target
    serves it, as the module docstring says, and stream that answer to the client. A request
    the client leaves while a target has it lists that attempt too ("spare (no answer)"): the
    attempts a row lists are the requests the targets received."""
    flight = _InFlight()
    try:
        return await _forward_routed(
            request,
            record,
            routes,
            body,
            flight,
            upstream_for=upstream_for,
            routing=routing,
            cooldowns=cooldowns,
            on_failover=on_failover,
        )
    except asyncio.CancelledError:
        if flight.label is not None and len(record.attempts) == flight.noted:
            record.attempts.append(f"{flight.label} (no answer)")
        raise


async def _forward_routed(
    request: web.BaseRequest,
    record: RequestRecord,
    routes: Sequence[Route],
    body: RequestBody,
    flight: _InFlight,
    *,
    upstream_for: Callable[[str], Upstream],
    routing: Routing,
    cooldowns: Cooldowns,
    on_failover: Callable[[FailoverEvent], None],
) -> web.StreamResponse:
    if not body.replayable:
        routes = routes[:1]  # a streamed body is gone once sent: no second target, no second try
    routes = _ordered(routes, cooldowns, record)
    # Only a target with somewhere to fail over to waits for Retry-After or for the first event;
    # one without answers as it would without routes.
    failover = len(routes) > 1
    tally = _Tally(cooldowns, routing, on_failover)
    kept: _KeptAnswer | None = None
    last_error: ProxyError | None = None
    for index, route in enumerate(routes):
        upstream = upstream_for(route.target)
        record.target = upstream.label
        prefix = route.prefix
        last = index == len(routes) - 1
        asked_again = False
        while True:
            flight.label, flight.noted = upstream.label, len(record.attempts)
            try:
                response = await open_upstream(
                    request, upstream, body, path=route.path, replaced_body=route.body
                )
                record.head_at = asyncio.get_running_loop().time()
            except RequestRefused as refusal:
                # The client's own body could not be read: no target is to blame.
                record.note = refusal.code
                record.error = refusal.message
                return refusal.to_response()
            except ProxyError as error:
                record.attempts.append(f"{upstream.label} {error.code}")
                _failed(record, upstream, error.status, error.code, error.message)
                last_error = error
                cause = error.code
                break
            status = response.status
            if status in FAILOVER_STATUSES:
                wait = retry_after_s(response.headers.get(hdrs.RETRY_AFTER)) if status == 429 else None
                if failover and wait is not None and wait <= routing.retry_after_max_s and not asked_again:
                    record.attempts.append(f"{upstream.label} {status}")
                    _failed(record, upstream, status)
                    response.release()
                    asked_again = True
                    await asyncio.sleep(wait)
                    continue
                if last:
                    record.attempts.append(f"{upstream.label} {status}")
                    if failover:
                        tally.failed(route.target, str(status))
                        tally.tell(None)
                    record.answered_by = upstream
                    return await pass_response(request, upstream, record, response, local_prefix=prefix)
                record.attempts.append(f"{upstream.label} {status}")
                _failed(record, upstream, status)
                kept = await _keep(response, upstream, prefix) or kept
                cause = str(status)
                break
            first = b""
            # Only a 200 is waited on: a 201/202 means the target took the request, and an empty
            # answer to HEAD or OPTIONS (a CORS preflight) is what those ask for.
            if not last and status == 200 and request.method not in _NO_CONTENT_METHODS:
                try:
                    first, failure = await first_bytes(response, request.method)
                except BaseException as exc:
                    response.close()  # cut short: the connection cannot go back to the pool
                    if not isinstance(exc, (TimeoutError, aiohttp.ClientError)):
                        raise  # the client left (cancelled), or a bug
                    last_error = map_client_error(exc, target=upstream.label)
                    record.attempts.append(f"{upstream.label} {last_error.code}")
                    _failed(record, upstream, last_error.status, last_error.code, last_error.message)
                    cause = last_error.code
                    break
                if failure is not None:
                    record.attempts.append(f"{upstream.label} {status} ({failure})")
                    _failed(record, upstream, 0, failure)  # neither fine nor a known trouble
                    kept = await _keep(response, upstream, prefix, first) or kept
                    cause = failure
                    break
            record.attempts.append(f"{upstream.label} {status}")
            record.answered_by = upstream
            answered = await pass_response(
                request, upstream, record, response, first=first, local_prefix=prefix
            )
            if record.note and failover:
                # Broken off mid-body: the client sees a broken response; the target is to blame.
                tally.failed(route.target, STREAM_CUT)
            else:
                cooldowns.served(route.target)
            tally.tell(route.target)
            return answered
        if failover:
            tally.failed(route.target, cause)
    tally.tell(None)
    # Every target failed before sending anything: the last answer one gave, or the last error.
    if kept is not None:
        record.note = "all targets failed"
        return await _send_kept(request, kept, record)
    assert last_error is not None
    record.note = last_error.code
    record.error = last_error.message
    return last_error.to_response()


def _failed(
    record: RequestRecord, upstream: Upstream, status: int, code: str = "", message: str = ""
) -> None:
    """Note that ``upstream`` did not serve the request: its ``status``, or the failure's
    ``code`` and ``message`` (for the service to note the target's condition)."""
    if record.outcomes is None:
        record.outcomes = []
    record.outcomes.append((upstream, status, code, message))


def _ordered(routes: Sequence[Route], cooldowns: Cooldowns, record: RequestRecord) -> Sequence[Route]:
    """``routes`` in the order tried (targets cooling down last); the access line says when the
    chosen target was put last, so a request that skipped it reads why."""
    ordered = cooldowns.order(routes)
    if ordered[0] is not routes[0]:
        record.chosen_by += f" ({routes[0].target} tried last)"
    return ordered


class _Tally:
    """One request's failures, counted for the cool-downs as they come and told to the
    listener once it is known who served the request (a fallback "took over" only if it did)."""

    __slots__ = ("_cooldowns", "_cooled", "_first", "_on_failover", "_routing")

    def __init__(
        self, cooldowns: Cooldowns, routing: Routing, on_failover: Callable[[FailoverEvent], None]
    ) -> None:
        self._cooldowns = cooldowns
        self._routing = routing
        self._on_failover = on_failover
        self._first: tuple[str, str] | None = None
        self._cooled = False

    def failed(self, name: str, cause: str) -> None:
        """``name`` failed for ``cause``: counted now, told with the outcome."""
        self._cooled |= self._cooldowns.failed(name, self._routing)
        if self._first is None:
            self._first = (name, cause)

    def tell(self, served: str | None) -> None:
        """The request ended, served by ``served`` (None: by no target): the listener hears of
        the first failure and who took over, or that a cool-down began."""
        if self._first is None:
            return
        name, cause = self._first
        if served == name and not self._cooled:
            return  # broke off after its first byte, yet no cool-down: no failover happened
        self._on_failover(
            FailoverEvent(name, cause, served if served != name else None, self._cooldowns.cooling())
        )


async def carry_routed_websocket(
    request: web.BaseRequest,
    record: RequestRecord,
    routes: Sequence[Route],
    live: set[OpenWebSocket],
    *,
    token_required: bool,
    upstream_for: Callable[[str], Upstream],
    routing: Routing,
    cooldowns: Cooldowns,
    on_failover: Callable[[FailoverEvent], None],
) -> web.StreamResponse:
    """Carry a WebSocket to the first target along ``routes`` that takes the upgrade (answers
    101); the last one's refusal, if it comes to that, reaches the client as it is."""
    routes = _ordered(routes, cooldowns, record)
    tally = _Tally(cooldowns, routing, on_failover)
    for index, route in enumerate(routes):
        upstream = upstream_for(route.target)
        record.target = upstream.label
        last = index == len(routes) - 1
        record.answered_by = upstream
        try:
            answered = await carry_websocket(
                request,
                upstream,
                record,
                live,
                token_required=token_required,
                path=route.path,
                local_prefix=route.prefix,
                fail_over=not last,
            )
        except UpgradeFailed as failed:
            record.answered_by = None
            record.attempts.append(f"{upstream.label} {failed.cause}")
            _failed(record, upstream, failed.status or 0, "" if failed.status else failed.cause)
            tally.failed(route.target, failed.cause)
            continue
        except BaseException:
            # Carried, then ended by the client leaving (the handler is cancelled): the line still
            # names the target that carried it.
            record.attempts.append(f"{upstream.label} {record.status or '-'}")
            raise
        record.attempts.append(f"{upstream.label} {record.status or '-'}")
        if record.status == 101:
            cooldowns.served(route.target)
            tally.tell(route.target)
        else:  # the last target refused too: its answer went to the client as it is
            if len(routes) > 1:
                tally.failed(route.target, record.note or str(record.status))
            tally.tell(None)
        return answered
    raise AssertionError("unreachable: the last route answers the client")  # pragma: no cover
