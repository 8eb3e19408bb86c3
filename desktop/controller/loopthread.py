"""The proxy's event loop, running in a thread of its own: start it, hand it work, shut it down.

The tray owns the main thread (macOS requires it) and ``serve`` waits there for signals, so the
proxy's loop runs beside them. Work from another thread goes in through
``run_coroutine_threadsafe`` and is waited for with a bound; nothing here knows what the work is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from desktop.engine.eventloop import new_event_loop

__all__ = ["CALL_TIMEOUT_S", "LoopThread"]

T = TypeVar("T")
# Bound on one call into the loop, beyond a stop's grace period.
CALL_TIMEOUT_S = 15.0
# A few loop turns for closing transports to finish before the loop is closed.
TRANSPORT_SETTLE_S = 0.05


class LoopThread:
    """One asyncio loop in a daemon thread, started and shut down as often as asked."""

    def __init__(self, name: str = "trayproxy-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """A new loop, running when this returns."""
        if self._loop is not None:
            return
        loop = new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(loop, ready), name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def shutdown(self) -> None:
        """Let what is left on the loop finish, then stop and close it."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(_finish(loop), loop).result(CALL_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            loop.close()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()


async def _finish(loop: asyncio.AbstractEventLoop) -> None:
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    # A connection accepted just as the listener closed is handed over in a task of asyncio's
    # own; cancelled before its first step, it never closes the socket (a ResourceWarning under
    # load). Let those run: the stopped server aborts them.
    accepting = [task for task in rest if getattr(task.get_coro(), "__qualname__", "").endswith("_accept_connection2")]
    if accepting:
        await asyncio.wait(accepting, timeout=TRANSPORT_SETTLE_S * 10)
    # Anything still scheduled (a pool closing, a pump ending) gets to finish.
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    # Transports closed just now drop their sockets in call_soon callbacks; a loop closed before
    # those run leaves sockets open (ResourceWarning at GC).
    await asyncio.sleep(TRANSPORT_SETTLE_S)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
