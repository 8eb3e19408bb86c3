"""ProxyController: the proxy on its own asyncio loop in a background thread.

The one owner of a thread and an event loop. Front ends (``trayproxy serve`` now, the tray
later) call its methods from their own thread; each call is handed to the loop with
``run_coroutine_threadsafe`` and waited for with a bound. State leaves as an immutable
:class:`ProxyStatus` snapshot, handed to listeners on whichever thread made the change: a
listener must only store it and ask its own thread to refresh, never touch UI objects there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp.abc import AbstractResolver

from desktop.config.model import ProxySettings, Target
from desktop.engine.service import ListenError, ProxyService

__all__ = ["ListenError", "ProxyController", "ProxyStatus"]

log = logging.getLogger("trayproxy.controller")

T = TypeVar("T")
State = Literal["stopped", "running", "error"]
# Bound on one call into the loop, beyond the stop grace period.
CALL_TIMEOUT_S = 15.0
# A few loop turns for closing transports to finish before the loop is closed.
TRANSPORT_SETTLE_S = 0.05


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    """What the proxy is doing, as of one moment."""

    state: State
    target_name: str
    target_url: str
    # (host, port) pairs actually listened on; empty unless running.
    addresses: tuple[tuple[str, int], ...] = ()
    # The last error in plain words (port taken, ...); None when all is well.
    error: str | None = None

    @property
    def local_url(self) -> str | None:
        """The base URL tools should use, e.g. ``http://127.0.0.1:8000``."""
        if not self.addresses:
            return None
        host, port = self.addresses[0]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


StatusListener = Callable[[ProxyStatus], None]


class ProxyController:
    """Thread-safe start/stop/set_target for the proxy engine."""

    def __init__(
        self,
        settings: ProxySettings,
        target: Target,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._settings = settings
        self._target = target
        self._resolver_factory = resolver_factory
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._service: ProxyService | None = None
        self._listeners: list[StatusListener] = []
        self._status = ProxyStatus("stopped", target.display_name, target.url)

    @property
    def status(self) -> ProxyStatus:
        """The latest status snapshot."""
        return self._status

    @property
    def target(self) -> Target:
        """The target new requests go to."""
        return self._target

    def add_listener(self, listener: StatusListener) -> None:
        """Call ``listener(status)`` on every change (on the thread that made it)."""
        self._listeners.append(listener)

    def start(self) -> ProxyStatus:
        """Start listening; raise ListenError (also recorded in the status) if it cannot."""
        with self._lock:
            if self._service is not None:
                return self._status
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="trayproxy-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                service = self._call(self._start_service())
            except BaseException as exc:
                self._shutdown_loop()
                message = str(exc) if isinstance(exc, ListenError) else f"could not start: {exc!r}"
                self._publish(self._snapshot("error", error=message))
                raise
            self._service = service
            self._publish(self._snapshot("running", addresses=tuple(service.addresses)))
            return self._status

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the proxy, giving open requests up to ``grace_s`` (default: the settings')."""
        with self._lock:
            service, self._service = self._service, None
            if service is not None:
                try:
                    self._call(service.stop(grace_s), timeout=CALL_TIMEOUT_S + (grace_s or 0))
                finally:
                    self._shutdown_loop()
            if self._status.state != "stopped":
                self._publish(self._snapshot("stopped"))

    def set_target(self, target: Target) -> None:
        """Send new requests to ``target``; open requests and streams finish where they are."""
        with self._lock:
            self._target = target
            service = self._service
            if service is not None:
                assert self._loop is not None

                async def switch() -> None:
                    service.set_target(target)

                self._call(switch())
            self._publish(
                self._snapshot(self._status.state, addresses=self._status.addresses, error=self._status.error)
            )

    # -- internals ---------------------------------------------------------------------

    async def _start_service(self) -> ProxyService:
        resolver = self._resolver_factory() if self._resolver_factory else None
        service = ProxyService(self._settings, self._target, resolver=resolver)
        await service.start()
        return service

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            # Anything still scheduled (a pool closing, a pump ending) gets to finish.
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            # Transports closed just now drop their sockets in call_soon callbacks; a loop
            # closed before those run leaves sockets open (ResourceWarning at GC).
            await asyncio.sleep(TRANSPORT_SETTLE_S)
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        try:
            asyncio.run_coroutine_threadsafe(finish(), loop).result(CALL_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            loop.close()

    def _snapshot(
        self,
        state: State,
        *,
        addresses: tuple[tuple[str, int], ...] = (),
        error: str | None = None,
    ) -> ProxyStatus:
        return ProxyStatus(state, self._target.display_name, self._target.url, addresses, error)

    def _publish(self, status: ProxyStatus) -> None:
        self._status = status
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                log.exception("status listener failed")
