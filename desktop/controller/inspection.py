"""The inspector as the controller runs it: one store for every listener, kept across a stop.

The store (inspector/store.py) is the engine's capture tap; ``[inspector] enabled = false``
gives the listeners no tap at all, so the engine does nothing more per request than before the
inspector existed. All the store's work happens on the proxy's loop: ``configure`` is called
there (LoopThread.call).
"""

from __future__ import annotations

from desktop.config.model import Inspection
from desktop.engine.capture import CaptureTap
from desktop.engine.service import OwnPages
from desktop.inspector.store import InspectorStore

__all__ = ["InspectorHub"]

MIB = 1024 * 1024


class InspectorHub:
    """The store, and what the listeners are given of it under the current settings."""

    def __init__(self, settings: Inspection) -> None:
        self.settings = settings
        self.store = InspectorStore(
            max_rows=settings.max_rows,
            body_cap_bytes=settings.body_cap_mib * MIB,
            keep_bodies=settings.keep_bodies,
        )
        self.pages: OwnPages | None = None

    @property
    def tap(self) -> CaptureTap | None:
        """The listeners' capture tap: None with the inspector switched off."""
        return self.store if self.settings.enabled else None

    @property
    def served_pages(self) -> OwnPages | None:
        """The page the listeners serve: None with the inspector switched off."""
        return self.pages if self.settings.enabled else None

    def configure(self, settings: Inspection) -> None:
        """On the loop: new bounds and switches (a config edit). Switched off, what is held
        is dropped, as a person turning it off would expect."""
        self.settings = settings
        if not settings.enabled:
            self.store.clear()
        self.store.configure(
            max_rows=settings.max_rows,
            body_cap_bytes=settings.body_cap_mib * MIB,
            keep_bodies=settings.keep_bodies,
        )
