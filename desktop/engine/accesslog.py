"""One log line per request: who, what, which target, the answer, how much, how fast.

Written by the proxy handler itself once the response is done (aiohttp's AccessLogger is off:
it formats every field on every request and would log the raw target, keys included). The
target is redacted here; the handlers' formatter redacts everything once more.

``desktop.logs`` may give the access logger a ``write_line`` attribute: a callable that takes the
message and returns True once it has queued the line exactly as the installed handlers would
print it (redacted), or False when the usual LogRecord path must be taken (other handlers,
filters or formats installed since). The engine does not import ``desktop.logs``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from desktop.engine.forward import RequestRecord
from desktop.engine.guard import FORWARDED_METHODS
from desktop.redaction import redact_target

__all__ = ["ACCESS_LOGGER", "log_request", "own_answer_bytes"]

ACCESS_LOGGER = logging.getLogger("trayproxy.access")
# Methods a line names as they are; any other is shown as "?": the method is whatever the client
# put first on its request line, a key pasted in the wrong place included ("sk-proj-... /v1/x",
# which the pure-Python parser takes as a method), and no key shape covers it once upper-cased.
_NAMED_METHODS = FORWARDED_METHODS | {"CONNECT"}
# RFC 9110 §6.4.1: an answer to HEAD, a 1xx, 204 or 304 carries no body, whatever it holds.
_BODILESS_STATUSES = frozenset({204, 304})


def own_answer_bytes(method: str, response: web.StreamResponse) -> int:
    """The body bytes of an answer TrayProxy made itself (a refusal, a 502, the health
    document), which aiohttp sends once the handler has returned, so after the line is made:
    the body it holds, or 0 where HTTP sends none."""
    if method == "HEAD" or response.status < 200 or response.status in _BODILESS_STATUSES:
        return 0
    body = response.body if isinstance(response, web.Response) else None
    return len(body) if isinstance(body, bytes | bytearray) else 0


def log_request(request: web.BaseRequest, record: RequestRecord, *, started: float, ended: float) -> None:
    """Log ``request`` as ``ip "METHOD /path" -> target status bytes ttfb=… total``, then
    ``cache=hit`` (or miss, record, offline-miss, bypass, unkept) when a recording was used, then
    a ``[note]`` (and, for unkept, ``not recorded: why``)."""
    if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
        return
    ttfb = "-" if record.first_byte_at is None else f"{record.first_byte_at - started:.3f}s"
    method = request.method if request.method in _NAMED_METHODS else "?"
    if record.chosen_by:
        # Routed: the route, then each target tried with its answer; the last one is the status.
        tried = ", ".join(record.attempts) or f"{record.target} {record.status or '-'}"
        if record.attempts and not record.attempts[-1].endswith(f" {record.status}"):
            tried += f" = {record.status or '-'}"
        outcome = f"via {record.chosen_by} -> {tried}"
    else:
        outcome = f"{f'-> {record.target} ' if record.target else ''}{record.status or '-'}"
    notes = "; ".join(
        note for note in (record.note, record.cache_note and f"not recorded: {record.cache_note}") if note
    )
    line = (
        f'{request.remote or "-"} "{method} {redact_target(request.raw_path)}" '
        f"{outcome} {record.bytes_down} ttfb={ttfb} {ended - started:.3f}s"
        f"{f' cache={record.cache}' if record.cache else ''}"
        f"{f' [{notes}]' if notes else ''}"
    )
    write_line = getattr(ACCESS_LOGGER, "write_line", None)
    if write_line is not None and write_line(line):
        return
    # The record is made and handed over directly: Logger.info would also walk the stack to
    # find the caller's file and line, which this line never shows (a few us per request).
    ACCESS_LOGGER.handle(
        ACCESS_LOGGER.makeRecord(ACCESS_LOGGER.name, logging.INFO, __file__, 0, line, (), None)
    )
