"""The proxy's listening services on one event loop, changed only by :meth:`Listeners.apply`.

``apply`` takes the listeners a plan wants (:class:`desktop.config.model.Listener`: the main
one, then the targets served on ports of their own) and makes the running services match, in
one coroutine on the proxy's loop, in the shape of mitmproxy's ``Servers.update``: close what
goes, move what moved, start what is new, and return a :class:`Report` of where each listens
and what could not be done. Applying the same plan again retries what failed (a port that was
taken) and touches nothing else.

A move binds the new address while the old one still listens, so a taken port changes nothing
for the tools; the old service then stops accepting and finishes its open requests in the
background within its grace period (:meth:`Listeners.stop` waits for those too).

Runs on the loop only: no threads, no locks, no files. Successes are logged here, and a listener
that could not take its old address back; a failure to open or move is only reported, since its
message names who holds a port and where to choose another, which only the caller knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from aiohttp.abc import AbstractResolver

from desktop.config.model import Listener, ProxySettings
from desktop.engine.addresses import ListenError, where
from desktop.engine.capture import CaptureTap
from desktop.engine.condition import TargetCondition
from desktop.engine.cooldowns import Cooldowns
from desktop.engine.failover import FailoverEvent
from desktop.engine.recall import AnswerRecall
from desktop.engine.service import OwnPages, ProxyService, describe_target_change

__all__ = ["Address", "Listeners", "Outcome", "Report"]

log = logging.getLogger("trayproxy.listeners")
# Where a target switch is logged, so one made with a move reads like any other.
_service_log = logging.getLogger("trayproxy.service")

# (host, port) as listened on.
Address = tuple[str, int]
# How the main listener is named in the log lines; a target's own one is "target NAME".
MAIN_LISTENER = "the proxy"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where one wanted listener is after an apply, and why it is not where wanted."""

    wanted: Listener
    # Where it listens now; () when it does not listen at all.
    addresses: tuple[Address, ...]
    # Why it is not where wanted (a ListenError when a port is taken, ...); None when it is.
    error: BaseException | None
    # Where it listened before this apply moved it; () unless it was moved.
    moved_from: tuple[Address, ...] = ()
    # True when this apply opened its listening sockets (a start or a move): the time to warn
    # of hosts beyond loopback.
    opened: bool = False
    # True when ``error`` came from moving it: it still listens at ``addresses``, its old
    # place, or nowhere when even that could not be taken back.
    move_failed: bool = False

    @property
    def wanted_addresses(self) -> tuple[Address, ...]:
        """Where it should listen, as the settings say (port 0: whatever the OS picks)."""
        settings = self.wanted.settings
        return tuple((host, settings.port) for host in settings.hosts)


@dataclass(frozen=True, slots=True)
class Report:
    """What an apply did: one outcome per wanted listener, keyed by ``Listener.own``."""

    outcomes: Mapping[str | None, Outcome]
    # (own name, port) of each target's own listener this apply closed outside a move: no
    # longer wanted, on the main listener's port, or leaving its port to another listener.
    retired: tuple[tuple[str, int], ...] = ()
    # The main listener's move failed and its old address could not be taken back: nothing
    # serves the chosen target any more (the caller stops everything).
    main_lost: bool = False

    @property
    def main(self) -> Outcome:
        """The main listener's outcome."""
        return self.outcomes[None]

    @property
    def has_errors(self) -> bool:
        """True when some listener is not where wanted, so applying again may help."""
        return any(outcome.error is not None for outcome in self.outcomes.values())


class Listeners:
    """The proxy's listening services on one loop; changed only by :meth:`apply`."""

    def __init__(
        self,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        on_condition: Callable[[TargetCondition], None] | None = None,
        on_failover: Callable[[FailoverEvent], None] | None = None,
        tap: CaptureTap | None = None,
        pages: OwnPages | None = None,
        recall: AnswerRecall | None = None,
    ) -> None:
        """``resolver_factory`` makes each service's DNS resolver (None: aiohttp's default);
        ``on_condition`` and ``on_failover`` are every service's listeners, ``tap`` and
        ``pages`` every service's capture tap and own pages, ``recall`` the recording of answers
        they share (see ProxyService)."""
        self._resolver_factory = resolver_factory
        self._on_condition = on_condition
        self._on_failover = on_failover
        self._tap = tap
        self._pages = pages
        self._recall = recall
        # One record of failing targets for all listeners: a target failing on the main port
        # is tried last on its own port's fallbacks too.
        self.cooldowns = Cooldowns()
        self._main: ProxyService | None = None
        # Targets served on ports of their own, by name.
        self._own: dict[str, ProxyService] = {}
        # Services closed by a move or a removed target, finishing their open requests (and
        # the kept-alive connections those came on), each with the task that stops it.
        self._retiring: dict[ProxyService, asyncio.Task[None]] = {}

    @property
    def running(self) -> bool:
        """True while the main listener is up."""
        return self._main is not None

    def service(self, own: str | None) -> ProxyService | None:
        """The live service of the main listener (``own`` None) or of target ``own``'s port."""
        return self._main if own is None else self._own.get(own)

    async def apply(self, wanted: Sequence[Listener]) -> Report:
        """Make the services match ``wanted`` (the main listener first, then targets' own
        ports) and report where each listens. With the main listener down, it is started
        first, and nothing else is started if it cannot be."""
        main, owns = _split(wanted)
        retired = await self._release_claimed(main, owns)
        self._update_settings(main, owns)
        outcome, lost = await self._place_main(main)
        outcomes: dict[str | None, Outcome] = {None: outcome}
        if self._main is None:
            outcomes.update((own.own, self._as_is(own)) for own in owns)
            return Report(outcomes, tuple(retired), main_lost=lost)
        retired += await self._retire_unwanted(owns)
        for own in owns:
            outcomes[own.own] = await self._place_own(own)
        return Report(outcomes, tuple(retired))

    def set_capture(self, tap: CaptureTap | None, pages: OwnPages | None) -> None:
        """Tell ``tap`` of every request from the next one on, and serve ``pages``, on every
        listener (None: neither; the inspector switched off)."""
        self._tap, self._pages = tap, pages
        for service in (self._main, *self._own.values(), *self._retiring):
            if service is not None:
                service.tap, service.pages = tap, pages

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop every listener, giving open requests ``grace_s`` (default: each one's
        settings), and wait for those retiring after a move to finish their grace period."""
        services = [service for service in (self._main, *self._own.values()) if service is not None]
        self._main, self._own = None, {}
        await asyncio.gather(*(_stop_quietly(service, grace_s) for service in services))
        if self._retiring:
            await asyncio.gather(*self._retiring.values())

    # -- the steps of apply ------------------------------------------------------------

    async def _release_claimed(self, main: Listener, owns: Sequence[Listener]) -> list[tuple[str, int]]:
        """Close the own listeners leaving a port another listener now wants, so swapped
        ports (main 8000 and anthropic 8001 trading places) free each other instead of each
        finding the other's port taken."""
        claimed: dict[int, str | None] = {own.settings.port: own.own for own in owns}
        claimed[main.settings.port] = None
        wanted_ports = {own.own: own.settings.port for own in owns}
        released = []
        for name, service in list(self._own.items()):
            port = service.port
            if port != wanted_ports.get(name) and port in claimed and claimed[port] != name:
                log.info("target %s leaves port %d for %s", name, port, claimed[port] or MAIN_LISTENER)
                await self._retire(self._own.pop(name))
                released.append((name, port))
        return released

    def _update_settings(self, main: Listener, owns: Sequence[Listener]) -> None:
        """Give each live service the Host/Origin allowlists and the local token its listener
        now wants; they take effect from the next request, without a restart."""
        pairs = [(self._main, main), *((self._own.get(str(own.own)), own) for own in owns)]
        # A retiring service still answers its kept-alive connections until it stops: it takes
        # the plan's policy too (every listener of a plan has the main one's), so an edit that
        # turns require_token on or drops an allowed host reaches those connections at once.
        pairs += [(service, main) for service in self._retiring]
        for service, listener in pairs:
            if service is None:
                continue
            now, wanted = service.settings, listener.settings
            if (now.allowed_hosts, now.allowed_origins) != (wanted.allowed_hosts, wanted.allowed_origins):
                service.set_policy(wanted.allowed_hosts, wanted.allowed_origins)
            if (now.require_token, now.local_token) != (wanted.require_token, wanted.local_token):
                service.set_local_token(wanted.require_token, wanted.local_token)

    async def _place_main(self, main: Listener) -> tuple[Outcome, bool]:
        """The main listener started, moved or left where it is, on its target; and whether
        it was lost (its move failed and its old address could not be taken back)."""
        service = self._main
        if service is None:
            try:
                self._main = await self._start(main)
            except Exception as exc:
                return Outcome(main, (), exc), False
            return Outcome(main, _addresses(self._main), None, opened=True), False
        if _address(service.settings) == _address(main.settings):
            service.set_target(main.target)
            service.set_routing(main.routing)
            return Outcome(main, _addresses(service), None), False
        outcome, self._main = await self._relocate(MAIN_LISTENER, service, main)
        return outcome, self._main is None

    async def _retire_unwanted(self, owns: Sequence[Listener]) -> list[tuple[str, int]]:
        """Close the own listeners no longer wanted, or wanted on one of the main listener's
        ports (possible when ``--port`` overrides the file)."""
        main_ports = self._main_ports()
        wanted_ports = {own.own: own.settings.port for own in owns}
        retired = []
        for name in list(self._own):
            port = wanted_ports.get(name)
            if port is None or port in main_ports:
                gone = self._own.pop(name)
                log.info("target %s is no longer served on port %d", name, gone.port)
                retired.append((name, gone.port))
                await self._retire(gone)
        return retired

    async def _place_own(self, own: Listener) -> Outcome:
        """Target ``own.own``'s listener started, moved or left where it is, on its target."""
        name = str(own.own)
        port = own.settings.port
        if port in self._main_ports():
            return Outcome(own, (), ListenError(f"port {port} is the main listener's port"))
        service = self._own.get(name)
        if service is None:
            try:
                service = self._own[name] = await self._start(own)
            except Exception as exc:
                return Outcome(own, (), exc)
            log.info("target %s is also served on %s", name, where(service.addresses))
            return Outcome(own, _addresses(service), None, opened=True)
        if _address(service.settings) == _address(own.settings):
            service.set_target(own.target)
            service.set_routing(own.routing)
            return Outcome(own, _addresses(service), None)
        outcome, moved = await self._relocate(f"target {name}", service, own)
        if moved is None:
            del self._own[name]
        else:
            self._own[name] = moved
        return outcome

    # -- moving, starting and retiring services ---------------------------------------

    async def _relocate(
        self, what: str, service: ProxyService, listener: Listener
    ) -> tuple[Outcome, ProxyService | None]:
        """``service`` moved to ``listener``'s address (see _move), the move logged when it
        worked; the service now serving there, if any."""
        before = _addresses(service)
        moved, error = await self._move(service, listener)
        if error is None:
            assert moved is not None
            log.info(
                "%s now listens on %s; requests open on %s finish there (open WebSockets are told 1001 to reconnect)",
                what,
                where(moved.addresses),
                where(before),
            )
            if service.target != listener.target:
                # Started on the new target: said as a switch in place says it (service.py).
                _service_log.info(
                    "%s", describe_target_change(service.target, listener.target, port=moved.port)
                )
            return Outcome(listener, _addresses(moved), None, moved_from=before, opened=True), moved
        if moved is not None:
            # Still where it was, yet serving the target it is now given.
            moved.set_target(listener.target)
            moved.set_routing(listener.routing)
        addresses = _addresses(moved) if moved is not None else ()
        return Outcome(listener, addresses, error, move_failed=True), moved

    async def _move(
        self, old: ProxyService, listener: Listener
    ) -> tuple[ProxyService | None, BaseException | None]:
        """A service at ``listener``'s address in place of ``old``, and the error if there is
        none: (new, None); (old, error) when the new address cannot be had; (None, error) when
        even the old address could not be taken back. ``old`` is retired on success: it stops
        accepting and its open requests get its grace period, as on stop.

        A new port is bound while ``old`` still listens, so a taken port changes nothing. Other
        hosts on the same port cannot be bound next to ``old`` (0.0.0.0:P conflicts with
        127.0.0.1:P), so ``old`` closes its listening sockets first, for the time of one bind,
        and takes its address back if the new hosts fail."""
        old_port = old.port  # the port the OS picked, when the settings say 0
        same_port = listener.settings.port == old_port
        if same_port:
            await old.stop_listening()
        try:
            new = await self._start(listener)
        except Exception as exc:
            if not same_port:
                return old, exc
            try:
                back: ProxyService | None = await self._start(
                    Listener(replace(old.settings, port=old_port), old.target, listener.own, old.routing)
                )
            except Exception:
                log.exception("could not listen on port %d again", old_port)
                back = None
            await self._retire(old)
            return back, exc
        await self._retire(old)
        return new, None

    async def _start(self, listener: Listener) -> ProxyService:
        resolver = self._resolver_factory() if self._resolver_factory is not None else None
        service = ProxyService(
            listener.settings,
            listener.target,
            routing=listener.routing,
            resolver=resolver,
            on_condition=self._on_condition,
            on_failover=self._on_failover,
            cooldowns=self.cooldowns,
            tap=self._tap,
            pages=self._pages,
            recall=self._recall,
        )
        await service.start()
        return service

    async def _retire(self, service: ProxyService) -> None:
        """Close ``service``'s listening sockets now, so its address is free when this returns,
        and stop it in the background: open requests get its grace period, as on stop."""
        await service.stop_listening()
        task = asyncio.get_running_loop().create_task(_stop_quietly(service), name="retire-listener")
        self._retiring[service] = task
        task.add_done_callback(lambda _: self._retiring.pop(service, None))

    def _main_ports(self) -> set[int]:
        return {port for _, port in self._main.addresses} if self._main is not None else set()

    def _as_is(self, listener: Listener) -> Outcome:
        """An outcome for a listener this apply left alone (the main one is down): where it
        still listens, if anywhere."""
        service = self.service(listener.own)
        return Outcome(listener, _addresses(service) if service is not None else (), None)


def _split(wanted: Sequence[Listener]) -> tuple[Listener, list[Listener]]:
    """The main listener and the targets' own ones; ValueError when ``wanted`` does not start
    with the one main listener or names a target twice."""
    if not wanted or wanted[0].own is not None:
        raise ValueError("a plan's listeners start with the main one (own=None)")
    owns = list(wanted[1:])
    names = [own.own for own in owns]
    if None in names or len(set(names)) != len(names):
        raise ValueError("a plan has one main listener and one listener per target at most")
    return wanted[0], owns


async def _stop_quietly(service: ProxyService, grace_s: float | None = None) -> None:
    try:
        await service.stop(grace_s)
    except Exception:
        log.exception("a listener did not stop cleanly")


def _address(settings: ProxySettings) -> tuple[tuple[str, ...], int]:
    return (settings.hosts, settings.port)


def _addresses(service: ProxyService) -> tuple[Address, ...]:
    return tuple(service.addresses)
