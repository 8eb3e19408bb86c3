"""The inspector's HTTP side: its page, its JSON API, its push stream and its exports.

``InspectorPages`` is the engine's OwnPages (engine/service.py): the service hands it every
request under ``/__trayproxy/`` but the health check, after the Host/Origin guard, uncounted and
unlisted. Everything here is under ``/__trayproxy/inspector/``:

    GET  open?code=C            one-time code -> the session cookie, then the page
    GET  (index), app.js, style.css
    GET  api/exchanges          {"rows": [row...], "body_capture": bool}
    GET  api/exchanges/ID       one exchange in detail; ID/raw: its response body as text
    GET  api/events             text/event-stream: "row" per change, "gone" with the ids pushed
                                out of the list, "reset" to read the list again
    POST api/clear              forget everything held
    POST api/code               a one-time code (for ``trayproxy inspect``)
    GET  export.har, export.jsonl [?id=ID]

Each request but ``open`` passes access.py's check first. The page's files are read once, when
the pages are made (the engine does no file I/O), and every answer carries headers that keep it
out of caches, frames and other pages' reach, with a Content-Security-Policy that allows no
inline script: whatever a prompt holds is shown as text, never run.
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from desktop.engine.errors import ProxyError
from desktop.inspector import har, jsonl, views
from desktop.inspector.access import INSPECTOR_PREFIX, OPEN_FROM_TRAY, OPEN_PATH, InspectorAccess, refused
from desktop.inspector.masking import Masker
from desktop.inspector.store import Exchange, Gone, InspectorStore

__all__ = ["HEARTBEAT_S", "PAGE_DIR", "InspectorPages"]

log = logging.getLogger("trayproxy.inspector")

PAGE_DIR = Path(__file__).with_name("page")
# The page's files and their types: nothing else is served from the folder.
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
# A comment line on an idle push stream this often: proxies and browsers drop a connection
# that says nothing for long (and a dead client is found out by the write failing).
HEARTBEAT_S = 15.0
# How long the page's EventSource waits before connecting again after the stream ended (a
# stop, a restart): the WHATWG "retry" field, in ms.
RECONNECT_MS = 2000

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# The page ``open`` answers with: it navigates to the inspector from its own origin. A redirect
# would not do: the browser counts a redirect chain that began on another site (the opener file)
# as cross-site, and the first request of the page would be refused. Each page names an empty
# icon, or the browser asks for /favicon.ico, which the proxy lists as a refused request.
OPEN_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=./">
<link rel="icon" href="data:,">
<title>TrayProxy inspector</title></head>
<body><p><a href="./">Open the TrayProxy inspector</a></p></body></html>
"""
EXPIRED_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>TrayProxy inspector</title></head>
<body><p>This link to the TrayProxy inspector was used already or has expired (a link works
once, for two minutes). Open the inspector again from the tray menu, or run
<code>trayproxy inspect</code>.</p></body></html>
"""

Handler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]


def secured(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` with the inspector's security headers (before it is prepared)."""
    response.headers.update(SECURITY_HEADERS)
    return response


def _json(data: object, status: int = 200) -> web.Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _error(message: str, code: str, status: int) -> web.Response:
    return ProxyError(message, code=code, status=status).to_response()


def _snapshot(exchange: Exchange) -> Exchange:
    """A copy a worker thread may read while the loop goes on adding to the exchange: the
    lists are copied (their pieces are not: bytes never change)."""
    copied = copy.copy(exchange)
    copied.chunks = list(exchange.chunks)
    copied.chunk_times = list(exchange.chunk_times)
    return copied


def _export_name(extension: str, exchange_id: int | None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    which = f"-{exchange_id}" if exchange_id is not None else ""
    return f"trayproxy-{stamp}{which}.{extension}"


class InspectorPages:
    """The inspector under ``/__trayproxy/inspector/`` (engine/service.py's OwnPages)."""

    # What the service hands over: the folder without its "/" too, to be sent to the folder.
    prefix = INSPECTOR_PREFIX.rstrip("/")
    # The one-time link's path: the opener file's navigation reaches it as cross-site.
    entry = OPEN_PATH

    def __init__(
        self, store: InspectorStore, access: InspectorAccess, *, static_dir: Path = PAGE_DIR
    ) -> None:
        """``static_dir`` holds index.html, app.js and style.css, read here, once."""
        self.store = store
        self.access = access
        self.switched_off = False
        self._files = {
            name: ((static_dir / file_name).read_bytes(), content_type)
            for name, (file_name, content_type) in PAGE_FILES.items()
        }
        # One per open push stream, set by close_streams (made on the loop, by each stream).
        self._stream_ends: set[asyncio.Future[None]] = set()
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "api/exchanges"): self._list,
            ("POST", "api/clear"): self._clear,
            ("POST", "api/code"): self._code,
            ("GET", "export.har"): self._export_har,
            ("GET", "export.jsonl"): self._export_jsonl,
        }

    async def __call__(self, request: web.BaseRequest, stopping: asyncio.Event) -> web.StreamResponse:
        if self.switched_off:
            # Still answered here, so an open tab's retries stay out of the access log (which
            # would print the page's path) and the page is told why.
            return secured(
                _error("The inspector is switched off ([inspector] enabled = false)", "inspector_off", 404)
            )
        path = request.raw_path.split("?", 1)[0]
        if path == OPEN_PATH:
            return secured(self._open(request))
        page_path = self.access.page_path
        if path == page_path.rstrip("/"):
            # The page's files are named relative to the folder: it must end with "/".
            return secured(web.Response(status=308, headers={"Location": page_path}))
        if not path.startswith(page_path):
            # Not this run's page (a bookmark of an earlier run, a guess): the way in is the tray.
            return secured(refused(OPEN_FROM_TRAY))
        name = path[len(page_path) :]
        refusal = self.access.check(request)
        if refusal is not None:
            return secured(refusal)
        return secured(await self._answer(request, name, stopping))

    async def _answer(
        self, request: web.BaseRequest, name: str, stopping: asyncio.Event
    ) -> web.StreamResponse:
        method = request.method
        if name in self._files:
            if method not in ("GET", "HEAD"):
                return _error("Use GET", "method_not_allowed", 405)
            body, content_type = self._files[name]
            return web.Response(body=body, headers={"Content-Type": content_type})
        if name == "api/events" and method == "GET":
            return await self._events(request, stopping)
        handler = self._routes.get((method, name))
        if handler is not None:
            return await handler(request, name)
        if name.startswith("api/exchanges/") and method == "GET":
            return await self._one(name[len("api/exchanges/") :])
        return _error("No such inspector endpoint", "not_found", 404)

    # The way in ----------------------------------------------------------------------------

    def _open(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _error("Use GET", "method_not_allowed", 405)
        code = request.query.get("code", "")
        if not code or not self.access.redeem(code):
            log.debug("inspector opened with a used, expired or unknown code")
            return web.Response(status=403, body=EXPIRED_PAGE, content_type="text/html")
        page = html.escape(self.access.page_path, quote=True)
        response = web.Response(body=OPEN_PAGE.replace(b"./", page.encode()), content_type="text/html")
        self.access.set_cookie(response)
        return response

    async def _code(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        return _json({"code": self.access.issue_code()})

    # Reading -----------------------------------------------------------------------------------

    async def _list(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        rows = [views.row_json(exchange) for exchange in self.store.exchanges()]
        return _json({"rows": rows, "body_capture": self.store.keep_bodies})

    def _find(self, text: str) -> Exchange | None:
        # ASCII digits only: isdigit() also passes "²", which int() refuses.
        wellformed = text.isascii() and text.isdecimal() and len(text) < 19
        return self.store.get(int(text)) if wellformed else None

    async def _one(self, rest: str) -> web.StreamResponse:
        ident, _, what = rest.partition("/")
        exchange = self._find(ident)
        if exchange is None or what not in ("", "raw"):
            return _error("No such exchange (cleared, or pushed out by newer ones)", "not_found", 404)
        snapshot = _snapshot(exchange)
        if what == "raw":
            text = await asyncio.to_thread(_raw_text, snapshot)
            return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
        # Reading a long answer back takes a while: not on the loop that forwards requests.
        detail = await asyncio.to_thread(views.detail_json, snapshot)
        return _json(detail)

    async def _clear(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        self.store.clear()
        return web.Response(status=204)

    # The push stream ---------------------------------------------------------------------------

    def switch(self, on: bool) -> None:
        """On the loop: serve the inspector, or answer every request with 404 inspector_off and
        end the push streams open now (an open tab then empties itself)."""
        self.switched_off = not on
        if not on:
            self.close_streams()

    def close_streams(self) -> None:
        """On the loop: end every push stream open now (the pages are no longer served: the
        inspector was switched off). The page, reconnecting, is told 404 and empties itself."""
        for end in self._stream_ends:
            if not end.done():
                end.set_result(None)
        self._stream_ends.clear()

    async def _events(self, request: web.BaseRequest, stopping: asyncio.Event) -> web.StreamResponse:
        """Each exchange that starts, changes or ends, as an ``event: row``; ``event: reset``
        first and whenever the list must be read again (cleared, or the page fell behind).
        Returns at once when ``stopping`` is set, so an open tab never holds up a stop, or
        when close_streams is called."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        secured(response)
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stream_ends.add(closed)
        with self.store.subscribe(removals=True) as subscription:
            stop_wait = asyncio.ensure_future(stopping.wait())
            next_change: asyncio.Future[Exchange | Gone | None] | None = None
            try:
                await response.prepare(request)
                await response.write(f"retry: {RECONNECT_MS}\nevent: reset\ndata: {{}}\n\n".encode())
                while not stopping.is_set():
                    if next_change is None:
                        next_change = asyncio.ensure_future(subscription.queue.get())
                    done, _ = await asyncio.wait(
                        (next_change, stop_wait, closed),
                        timeout=HEARTBEAT_S,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if stop_wait in done or closed in done:
                        break
                    if next_change not in done:
                        await response.write(b": still here\n\n")
                        continue
                    changes = [next_change.result()]
                    next_change = None
                    while not subscription.queue.empty():
                        changes.append(subscription.queue.get_nowait())
                    await response.write(self._event_text(changes))
            except ConnectionError:  # the tab was closed while we wrote
                pass
            finally:
                stop_wait.cancel()
                self._stream_ends.discard(closed)
                if next_change is not None:
                    next_change.cancel()
        return response

    @staticmethod
    def _event_text(changes: Iterable[Exchange | Gone | None]) -> bytes:
        """The events for ``changes``: a reset if any asked for one (what came before it is in
        the list the page reads then), each exchange once, as it is now, and the ids of those
        pushed out of the list (the page drops their rows)."""
        pending: dict[int, Exchange] = {}
        gone: list[int] = []
        reset = False
        for change in changes:
            if change is None:
                reset = True
                pending.clear()
                gone.clear()
            elif isinstance(change, Gone):
                pending.pop(change.exchange_id, None)
                gone.append(change.exchange_id)
            else:
                pending.pop(change.id, None)
                pending[change.id] = change
        parts = ["event: reset\ndata: {}\n\n"] if reset else []
        for exchange in pending.values():
            data = json.dumps(views.row_json(exchange), ensure_ascii=False, separators=(",", ":"))
            parts.append(f"event: row\ndata: {data}\n\n")
        if gone:
            parts.append(f'event: gone\ndata: {{"ids":{json.dumps(gone)}}}\n\n')
        return "".join(parts).encode()

    # Exports -----------------------------------------------------------------------------------

    def _selected(self, request: web.BaseRequest) -> list[int] | None:
        """The ids of the exchanges an export asks for (``?id=ID``: that one; else all, oldest
        first); None for an id not held."""
        ident = request.query.get("id")
        if ident is None:
            return [exchange.id for exchange in reversed(self.store.exchanges())]
        exchange = self._find(ident)
        return None if exchange is None else [exchange.id]

    async def _export_har(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        return await self._export(request, HAR_EXPORT)

    async def _export_jsonl(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        return await self._export(request, JSONL_EXPORT)

    async def _export(self, request: web.BaseRequest, form: ExportForm) -> web.StreamResponse:
        """The export, written as it is made: a few entries at a time are read off the loop (in
        a worker thread, on snapshots taken as their turn comes) and sent, so the whole body
        ring is never in memory twice, let alone as one JSON text."""
        ids = self._selected(request)
        if ids is None:
            return _error("No such exchange (cleared, or pushed out by newer ones)", "not_found", 404)
        ident = request.query.get("id")
        filename = _export_name(form.extension, int(ident) if ident is not None else None)
        response = web.StreamResponse(
            headers={
                "Content-Type": form.content_type,
                "Content-Disposition": f'attachment; filename="{filename}"',
            }
        )
        secured(response)
        pending = deque(ids)
        try:
            await response.prepare(request)
            await response.write(form.head)
            first = True
            while pending:
                batch = self._next_batch(pending)
                if not batch:
                    continue
                entries = await asyncio.to_thread(_entries, form, batch)
                await response.write(entries if first else form.separator + entries)
                first = False
            await response.write(form.tail)
            await response.write_eof()
        except ConnectionError:  # the download was called off
            pass
        return response

    def _next_batch(self, pending: deque[int]) -> list[Exchange]:
        """Snapshots of the next few exchanges still held: up to EXPORT_BATCH of them, fewer
        when their bodies reach EXPORT_BATCH_BYTES (one made of a big body is sent alone)."""
        batch: list[Exchange] = []
        weight = 0
        while pending and len(batch) < EXPORT_BATCH and weight < EXPORT_BATCH_BYTES:
            exchange = self.store.get(pending.popleft())
            if exchange is not None:  # else pushed out since the export began
                batch.append(_snapshot(exchange))
                weight += exchange.kept_bytes
        return batch


@dataclass(frozen=True, slots=True)
class ExportForm:
    """A file written entry by entry: ``head``, the entries joined by ``separator``, ``tail``."""

    extension: str
    content_type: str
    head: bytes
    entry: Callable[[Exchange], bytes]
    separator: bytes
    tail: bytes


HAR_EXPORT = ExportForm("har", "application/json", har.HAR_HEAD, har.har_entry_bytes, b",", har.HAR_TAIL)
JSONL_EXPORT = ExportForm("jsonl", "application/x-ndjson", b"", jsonl.jsonl_line, b"", b"")
# How many exchanges an export reads in one go (each go a worker thread's), and how many of
# their body bytes: enough to spare the thread's cost per small entry, few enough that what
# one go holds as JSON stays a few MiB.
EXPORT_BATCH = 64
EXPORT_BATCH_BYTES = 1024 * 1024


def _entries(form: ExportForm, exchanges: list[Exchange]) -> bytes:
    return form.separator.join(form.entry(exchange) for exchange in exchanges)


def _raw_text(exchange: Exchange) -> str:
    """The response body as it came, as text, keys masked (an echoing target, an error that
    quotes the key it was given)."""
    return Masker(exchange.head, exchange.request_body).text(
        exchange.response_body().decode("utf-8", "replace")
    )
