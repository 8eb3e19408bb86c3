"""The inspector as the controller runs it: one store for every listener, kept across a stop.

The store (inspector/store.py) is the engine's capture tap; ``[inspector] enabled = false``
gives the listeners no tap at all (the page then answers 404 inspector_off), so the engine does nothing more per request than before the
inspector existed. All the store's work happens on the proxy's loop: ``configure`` is called
there (LoopThread.call).
"""

from __future__ import annotations

import logging
from pathlib import Path

from desktop.config.model import Inspection
from desktop.engine.addresses import host_port
from desktop.engine.capture import CaptureTap
from desktop.inspector.access import (
    OPEN_PATH,
    InspectorAccess,
    remove_session_file,
    write_opener,
    write_session_file,
)
from desktop.inspector.readback import facts_of
from desktop.inspector.store import InspectorStore
from desktop.inspector.web import InspectorPages

__all__ = ["InspectorHub"]

log = logging.getLogger("trayproxy.inspector")

MIB = 1024 * 1024


class InspectorHub:
    """The store, and what the listeners are given of it under the current settings."""

    def __init__(self, settings: Inspection) -> None:
        self.settings = settings
        self.store = InspectorStore(
            max_rows=settings.max_rows,
            body_cap_bytes=settings.body_cap_mib * MIB,
            keep_bodies=settings.keep_bodies,
            read_back=facts_of,
        )
        # Who may read the page: a new secret each run (the cookie; one-time codes).
        self.access = InspectorAccess()
        # Served by every listener; switched off, it answers 404 inspector_off.
        self.pages = InspectorPages(self.store, self.access)
        self.pages.switch(settings.enabled)
        # Where `trayproxy inspect` finds the running inspector (the OS's per-user runtime
        # directory, which the front end knows); None: nowhere (tests, a proxy of a test).
        self.session_dir: Path | None = None
        self._announced: tuple[str, int] | None = None

    @property
    def tap(self) -> CaptureTap | None:
        """The listeners' capture tap: None with the inspector switched off."""
        return self.store if self.settings.enabled else None

    def configure(self, settings: Inspection) -> None:
        """On the loop: new bounds and switches (a config edit). Switched off, what is held
        is dropped, as a person turning it off would expect."""
        self.settings = settings
        self.pages.switch(settings.enabled)  # off: an open tab's stream ends, it empties itself
        if not settings.enabled:
            self.store.clear()
        self.store.configure(
            max_rows=settings.max_rows,
            body_cap_bytes=settings.body_cap_mib * MIB,
            keep_bodies=settings.keep_bodies,
        )

    # Where the page is ----------------------------------------------------------------------

    def listening(self, addresses: tuple[tuple[str, int], ...]) -> None:
        """The main listener is at ``addresses`` (empty: not listening): tell `trayproxy
        inspect` through the session file, rewritten only when the address changed."""
        where = _reachable(addresses[0]) if addresses and self.settings.enabled else None
        if where == self._announced or self.session_dir is None:
            return
        try:
            if where is None:
                remove_session_file(self.session_dir, self.access)
            else:
                write_session_file(self.session_dir, where[0], where[1], self.access)
        except OSError as exc:
            log.warning("could not write the inspector's session file in %s: %s", self.session_dir, exc)
            return
        self._announced = where

    def page_url(self, address: tuple[str, int]) -> str:
        host, port = _reachable(address)
        return f"http://{host_port(host, port)}{self.access.page_path}"

    def opener(self, address: tuple[str, int], code: str) -> Path | None:
        """A local file sending a browser to the page with the one-time ``code`` (so the code
        shows in no process list), or None when there is nowhere to write it."""
        if self.session_dir is None:
            return None
        host, port = _reachable(address)
        return write_opener(self.session_dir, f"http://{host_port(host, port)}{OPEN_PATH}?code={code}")


def _reachable(address: tuple[str, int]) -> tuple[str, int]:
    """``address`` as this machine's browser reaches it: a wildcard listen address (0.0.0.0,
    ::) is no Host the guard allows, so the page is addressed on the loopback of its family."""
    host, port = address
    if host in ("0.0.0.0", ""):
        return "127.0.0.1", port
    if host == "::":
        return "::1", port
    return host, port
