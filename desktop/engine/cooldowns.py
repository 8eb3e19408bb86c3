"""Which targets are tried last for now: a target that fails ``failures_for_cooldown`` times in
a row (before any byte reached the client) is put last in its requests' failover order for
``cooldown_s``, so requests stop waiting on a service known to be down. One record per loop,
shared by its listeners (Listeners makes it); the tray shows it through the status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from desktop.config.model import Routing
from desktop.routing import Route

__all__ = ["Cooldowns"]

log = logging.getLogger("trayproxy.failover")


class Cooldowns:
    """How each target has been failing, and which are tried last for now."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def cooling(self) -> tuple[tuple[str, float], ...]:
        """(name, end) of each target cooling down now, soonest end first."""
        now = self._clock()
        for name in [name for name, end in self._until.items() if end <= now]:
            del self._until[name]
        return tuple(sorted(self._until.items(), key=lambda item: item[1]))

    def order(self, routes: Sequence[Route]) -> Sequence[Route]:
        """``routes`` with those whose target is cooling down moved last, the rest in order."""
        if not self._until or len(routes) < 2:
            return routes
        cooling = dict(self.cooling())
        if not cooling:
            return routes
        return sorted(routes, key=lambda route: route.target in cooling)

    def failed(self, name: str, routing: Routing) -> bool:
        """Count a failure of ``name``; True when it starts a cool-down."""
        if routing.cooldown_s <= 0:
            return False  # cool-downs are off ([failover] cooldown = 0)
        count = self._failures.get(name, 0) + 1
        self._failures[name] = count
        if count >= routing.failures_for_cooldown and name not in self._until:
            self._until[name] = self._clock() + routing.cooldown_s
            self._failures[name] = 0
            log.warning(
                "target %s failed %d times in a row; it is tried last for %g s",
                name,
                count,
                routing.cooldown_s,
            )
            return True
        return False

    def served(self, name: str) -> None:
        """``name`` answered: its run of failures is over (a cool-down runs its course)."""
        if self._failures.get(name):
            self._failures[name] = 0
