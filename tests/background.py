"""Upstream servers on an event loop of their own thread, for tests whose client blocks.

The controller and ``trayproxy serve`` are driven from plain threads (the test's, or another
process), so their targets cannot live on the test's event loop: a blocked test would stall
them. ``BackgroundServer`` runs any aiohttp app (see ``upstreams.py``) on 127.0.0.1 in a
daemon thread with its own loop and stops it, connections and all, on exit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from upstreams import dead_port

__all__ = ["SLOW_STARTED", "BackgroundServer", "free_port", "slow_app", "status_kib", "wait_until"]

# Bound on starting or stopping a background server; both take milliseconds when healthy.
SERVER_CALL_TIMEOUT_S = 10.0

SLOW_STARTED = web.AppKey("slow_started", threading.Event)


class BackgroundServer:
    """``with BackgroundServer(app) as server:`` serves ``app`` at ``server.url``."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-upstream", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(SERVER_CALL_TIMEOUT_S)
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(SERVER_CALL_TIMEOUT_S)

    async def _start(self) -> None:
        runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Whatever a handler left behind (a sleeping slow answer) ends with the loop.
        current = asyncio.current_task()
        rest = [task for task in asyncio.all_tasks() if task is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


def slow_app() -> web.Application:
    """``/slow?s=SECONDS`` answers ``slept SECONDS`` after that long; ``app[SLOW_STARTED]`` is
    set when a slow request arrives, so a test knows it is in flight. Other paths answer at once."""

    async def slow(request: web.Request) -> web.Response:
        seconds = float(request.query.get("s", "1"))
        request.app[SLOW_STARTED].set()
        await asyncio.sleep(seconds)
        return web.Response(text=f"slept {seconds:g}")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    app = web.Application()
    app[SLOW_STARTED] = threading.Event()
    app.router.add_get("/slow", slow)
    app.router.add_get("/{tail:.*}", fast)
    return app


# A port on 127.0.0.1 that nothing listens on right now.
free_port = dead_port


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def status_kib(pid: int, field: str) -> int:
    """A size in KiB from ``/proc/PID/status`` (``VmRSS`` now, ``VmHWM`` its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing")
