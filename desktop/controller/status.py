"""What the proxy is doing, as of one moment: the immutable snapshot front ends are handed.

The controller publishes a new :class:`ProxyStatus` on every change through a
:class:`StatusBoard`; the tray stores it and redraws from it on its own thread, ``serve`` logs
from it. The snapshot is made from the plan and the last reconcile's report (plan_fields,
target_ports): plain values only, no loop, no thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from desktop.config.follow import Plan
from desktop.config.model import LogSettings, Secret
from desktop.engine.addresses import host_port, where
from desktop.engine.condition import TargetCondition, adds_key
from desktop.engine.listeners import Report
from desktop.redaction import display_target, redact_url

__all__ = [
    "FailoverNotice",
    "ProxyStatus",
    "RouteClaim",
    "State",
    "StatusBoard",
    "TargetPort",
    "plan_fields",
    "target_ports",
    "where",
]

log = logging.getLogger("trayproxy.controller")

State = Literal["stopped", "running", "error"]


def _local_url(addresses: tuple[tuple[str, int], ...]) -> str | None:
    return "http://" + host_port(*addresses[0]) if addresses else None


@dataclass(frozen=True, slots=True)
class TargetPort:
    """A target served on a port of its own (``port = 8001`` in its table), besides the main
    listener: an Anthropic-style tool on 8001 while an OpenAI-style one uses the main port."""

    name: str
    target_url: str
    port: int
    # (host, port) pairs listened on; empty while the proxy is stopped or the port is taken.
    addresses: tuple[tuple[str, int], ...] = ()
    # Why it is not listening there (port taken, ...); None when all is well.
    error: str | None = None
    # Why the target's key could not be read.
    key_problem: str | None = None
    # True when the proxy puts this target's key in (engine.condition.adds_key), so tools need
    # only a placeholder key.
    adds_key: bool = False
    # Credential headers (lower-case) its entry sets, read or not (see Plan.key_headers).
    key_headers: frozenset[str] = frozenset()

    @property
    def local_url(self) -> str | None:
        """The base URL tools should use for this target, e.g. ``http://127.0.0.1:8001``."""
        return _local_url(self.addresses)


@dataclass(frozen=True, slots=True)
class RouteClaim:
    """What one target claims on the main port: the path prefixes and model globs that send a
    request to it there (the chosen target takes everything else)."""

    name: str
    prefixes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    # Credential headers (lower-case) its entry sets, read or not (see Plan.key_headers): which
    # SDK a prefix of it is for.
    key_headers: frozenset[str] = frozenset()
    adds_key: bool = False

    @property
    def text(self) -> str:
        """``/anthropic, claude-*``: the claims as the menu shows them."""
        return ", ".join((*self.prefixes, *self.models))


@dataclass(frozen=True, slots=True)
class FailoverNotice:
    """The latest failover: ``failed`` (a target name) did not serve a request for ``cause``
    (its HTTP status, or what went wrong: ``connection_refused``, ``error event`` ...), and
    ``next`` took over (None: none was left, or a cool-down began). ``at``: wall-clock time."""

    failed: str
    cause: str
    next: str | None
    at: float


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    """What the proxy is doing, as of one moment."""

    state: State
    # The target as people see it: display_target's name and redact_url's URL (a key written
    # into the URL's path is masked).
    target_name: str
    target_url: str
    # (host, port) pairs actually listened on; empty unless running.
    addresses: tuple[tuple[str, int], ...] = ()
    # Why the proxy could not start (port taken, ...), or, while running, why it could not move
    # to the listen address the file now gives (it keeps serving where it was); None when all is well.
    error: str | None = None
    # The config's target names, in file order (empty without a config file).
    targets: tuple[str, ...] = ()
    # The config file followed, if any.
    config_path: str | None = None
    # Why the file's last edit was not applied (path:line:col lines); the last good one runs.
    config_error: str | None = None
    # Why the target's key could not be read (empty env var, no keychain, ...).
    key_problem: str | None = None
    # The target's latest trouble (key rejected, rate limited, unreachable) until it clears.
    condition: TargetCondition | None = None
    # Targets served on ports of their own, in file order.
    target_ports: tuple[TargetPort, ...] = ()
    # The token clients must send as their API key ([security] require_token); None when off.
    local_token: Secret | None = None
    # Credential headers (lower-case) the chosen target's entry sets, read or not: the Copy
    # environment lines point an SDK at the port whose target takes its key (desktop.clients).
    key_headers: frozenset[str] = frozenset()
    # The file's [log] settings, for the front end that owns logging (serve's -v and -q go on top).
    log: LogSettings = field(default_factory=LogSettings)
    # Routes on the main port, one per target claiming a prefix or models, in file order;
    # empty without routes.
    routes: tuple[RouteClaim, ...] = ()
    # Targets tried last for now because they kept failing: (name, wall-clock time the
    # cool-down ends), soonest first. An entry whose time has passed no longer applies.
    cooling: tuple[tuple[str, float], ...] = ()
    # The latest failover, for the tray to tell (once per cause, rate-limited there).
    failover: FailoverNotice | None = None
    # The chosen target's cache mode: "off", "record", "replay" or "offline" (engine/recall.py).
    cache_mode: str = "off"

    def cooling_now(self, now: float) -> tuple[str, ...]:
        """The targets still tried last at wall-clock time ``now``."""
        return tuple(name for name, end in self.cooling if end > now)

    @property
    def local_url(self) -> str | None:
        """The base URL tools should use, e.g. ``http://127.0.0.1:8000``."""
        return _local_url(self.addresses)

    @property
    def problem(self) -> str | None:
        """The one thing most worth showing a person now, or None when all is well."""
        if self.error:
            return self.error
        if self.config_error:
            return "the config file has an error: " + self.config_error.splitlines()[0]
        for own in self.target_ports:
            if own.error:
                return f"{own.name} on port {own.port}: {own.error}"
        if self.condition is not None:
            return self.condition.message
        if self.key_problem:
            return self.key_problem
        return next((own.key_problem for own in self.target_ports if own.key_problem), None)


StatusListener = Callable[[ProxyStatus], None]


class StatusBoard:
    """The latest :class:`ProxyStatus`, and who is told of each new one.

    Listeners run on the thread that made the change, in the order they were added; one that
    raises is logged and the others are still told."""

    def __init__(self, status: ProxyStatus) -> None:
        self._status = status
        self._listeners: list[StatusListener] = []
        # Held briefly to publish a snapshot, from any thread (the loop's included).
        self._lock = threading.RLock()

    @property
    def status(self) -> ProxyStatus:
        return self._status

    def add_listener(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    def update(self, **fields: Any) -> None:
        """Publish a snapshot with ``fields`` changed; nothing when nothing changed."""
        with self._lock:
            status = replace(self._status, **fields)
            if status == self._status:
                return
            self._status = status
            for listener in list(self._listeners):
                try:
                    listener(status)
                except Exception:
                    log.exception("status listener failed")


def plan_fields(plan: Plan) -> dict[str, Any]:
    """The status fields that follow from the plan alone."""
    target = plan.target
    return {
        "target_name": display_target(target),
        "target_url": redact_url(target.url),
        "targets": tuple(plan.config.targets) if plan.config is not None else (),
        "config_error": plan.config_error,
        "local_token": plan.settings.local_token,
        "key_problem": plan.key_problem,
        "key_headers": plan.key_headers(target.name, target),
        "log": plan.log,
        "routes": route_claims(plan),
        "cache_mode": target.cache,
    }


def route_claims(plan: Plan) -> tuple[RouteClaim, ...]:
    """What each target claims on the main port, as its route table has it."""
    routing = plan.main.routing
    if routing is None:
        return ()
    table = routing.table
    targets = {target.name: target for target in (plan.target, *routing.targets)}
    names = dict.fromkeys([*(name for _, name in table.prefixes), *(name for _, name in table.globs)])
    if plan.config is not None:  # file order
        names = dict.fromkeys(name for name in plan.config.targets if name in names)
    claims = []
    for name in names:
        target = targets.get(name)
        claims.append(
            RouteClaim(
                name=name,
                prefixes=tuple(prefix for prefix, owner in table.prefixes if owner == name),
                models=tuple(glob for glob, owner in table.globs if owner == name),
                key_headers=plan.key_headers(name, target) if target is not None else frozenset(),
                adds_key=adds_key(target) if target is not None else False,
            )
        )
    return tuple(claims)


def target_ports(plan: Plan, report: Report | None, errors: Mapping[str, str]) -> tuple[TargetPort, ...]:
    """The targets on ports of their own as ``plan`` has them, where ``report`` says each
    listens (None: the proxy is stopped), with ``errors`` saying why one does not."""
    ports = []
    for listener in plan.own_ports:
        name, target = listener.own or "", listener.target
        outcome = report.outcomes.get(name) if report is not None else None
        ports.append(
            TargetPort(
                name=name,
                target_url=redact_url(target.url),
                port=listener.settings.port,
                addresses=outcome.addresses if outcome is not None else (),
                error=errors.get(name),
                key_problem=plan.key_problems.get(name),
                adds_key=adds_key(target),
                key_headers=plan.key_headers(name, target),
            )
        )
    return tuple(ports)
