"""ProxyController: the verbs front ends use to run the proxy and have it follow the config.

Every change takes one way: a :class:`~desktop.config.follow.Plan` is made (from the file, the
command-line overrides and the keys, or from a target chosen live), and the proxy's loop applies
it in one step (:meth:`~desktop.engine.listeners.Listeners.apply`): what goes closes, what moved
moves, what is new opens. The report that comes back becomes the :class:`ProxyStatus` handed to
listeners, on whichever thread made the change: a listener must only store it and ask its own
thread to refresh, never touch UI objects there.

Made with :meth:`ProxyController.from_config`, it also follows the config file: a watcher
thread (watch.py) re-reads it when it changes (an invalid edit keeps the last good plan
running and is reported in the status and the log), fetches a command key again when a target
answers 401, and tries again a listener whose port was taken. :meth:`choose_target` switches
live and saves the choice in the file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.abc import AbstractResolver

from desktop.cache import Recordings
from desktop.config import options
from desktop.config.follow import (
    KeyReader,
    Plan,
    ca_bundle_error,
    follow,
    plan_for,
    read_config,
    routed_targets,
    tend_files,
)
from desktop.config.keys import key_refreshes
from desktop.config.localtoken import token_path
from desktop.config.model import Inspection, Listener, ProxySettings, Recording, Target
from desktop.config.parse import ConfigError, ConfigFile
from desktop.config.store import set_active_target, set_cache_mode
from desktop.controller.binding import PORT_RETRY_S, ConfigBinding
from desktop.controller.inspection import InspectorHub
from desktop.controller.loopthread import CALL_TIMEOUT_S, LoopThread
from desktop.controller.status import (
    FailoverNotice,
    ProxyStatus,
    StatusBoard,
    StatusListener,
    TargetPort,
    plan_fields,
    target_ports,
)
from desktop.controller.trouble import ListenTrouble, warn_if_exposed, warn_of_unmarked_hosts
from desktop.controller.watch import FileWatch
from desktop.engine.addresses import ListenError
from desktop.engine.condition import TargetCondition, adds_key
from desktop.engine.failover import FailoverEvent
from desktop.engine.listeners import Listeners, Report
from desktop.redaction import display_target, redact_url

__all__ = ["ListenError", "ProxyController"]

log = logging.getLogger("trayproxy.controller")

# Plans made outside the lock, each from the plan then current, before one is made under it.
PLAN_ATTEMPTS = 3
T = TypeVar("T")


class ProxyController:
    """Thread-safe start/stop/set_target for the proxy engine."""

    def __init__(
        self,
        settings: ProxySettings,
        target: Target,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        port_holder: Callable[[int], str | None] | None = None,
        port_advice: Callable[[str | None], str] | None = None,
        inspection: Inspection | None = None,
        recording: Recording | None = None,
    ) -> None:
        """``inspection``: what the inspector keeps (default: the declared defaults);
        ``recording``: how recorded answers are kept (the file's [cache]; each target's
        ``cache`` mode says whether its requests use them).
        ``port_holder(port)`` names the program holding a taken port, for the error (the
        OS glue lives in ``desktop.platforms.ports``; the front end hands it in).
        ``port_advice(target)`` says where to choose another port, for the main listener
        (``target`` None) or a target's own: a command-line flag, a setting in the file; only
        the front end knows which it reads."""
        self._plan = Plan(
            listeners=(Listener(settings, target),),
            inspector=inspection or Inspection(),
            cache=recording or Recording(),
        )
        self.inspector = InspectorHub(self._plan.inspector)
        # The recording of answers the listeners share; it opens its file on first use only
        # (a target whose cache mode is not off), in a worker thread of its own.
        self.recordings = Recordings(settings=self._plan.cache)
        self._resolver_factory = resolver_factory
        self._trouble = ListenTrouble(port_holder=port_holder, port_advice=port_advice)
        # Held by the verbs, which wait on the loop; never taken on the loop thread.
        self._lock = threading.RLock()
        self._loop = LoopThread()
        self._listeners: Listeners | None = None
        self._report: Report | None = None
        # Why a listener is not where the plan says, as last said: each own port's, the main one's.
        self._own_errors: dict[str, str] = {}
        self._main_error: str | None = None
        self._board = StatusBoard(
            ProxyStatus("stopped", display_target(target), redact_url(target.url), cache_mode=target.cache)
        )
        self._binding: ConfigBinding | None = None
        self._keys = KeyReader()
        self._watch: FileWatch | None = None
        self._last_port_retry = float("-inf")
        # Start failed because another program held the main port: tried again until it is
        # free, or until Stop (only while following a file, whose watcher does the trying).
        self._start_pending = False
        # A target whose key refresh was skipped as too soon, to retry when the interval ends.
        self._refresh_due: str | None = None

    @classmethod
    def from_config(
        cls,
        binding: ConfigBinding,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        port_holder: Callable[[int], str | None] | None = None,
        port_advice: Callable[[str | None], str] | None = None,
        config: ConfigFile | None = None,
    ) -> ProxyController:
        """A controller for the file's target (or the pinned one); raise ConfigError when the
        file cannot be used, KeyError when the pinned target is not in it. ``config``: the file
        as the front end read it with read_config (to set up logging from its [log] first)."""
        keys = KeyReader(refresh_interval_s=binding.key_refresh_interval_s)
        if config is None:
            config = read_config(binding.path, binding.overrides, chosen=binding.pinned_target)
        for notice in tend_files(binding.path, config):
            log.warning("%s", notice)
        plan = plan_for(config, binding.path, binding.overrides, keys, chosen=binding.pinned_target)
        controller = cls(
            plan.settings,
            plan.target,
            resolver_factory=resolver_factory,
            port_holder=port_holder,
            port_advice=port_advice,
            inspection=plan.inspector,
            recording=plan.cache,
        )
        controller._binding, controller._keys, controller._plan = binding, keys, plan
        controller._board.update(
            config_path=str(binding.path), **plan_fields(plan), target_ports=controller._target_ports()
        )
        # The chosen target's, then those of targets on ports of their own (said once each).
        for problem in dict.fromkeys(plan.key_problems.values()):
            log.warning("%s", problem)
        if binding.watch:
            paths = (binding.path, token_path(binding.path))  # `config token --rotate` acts like an edit
            controller._watch = FileWatch(paths, controller._tick, poll_s=binding.poll_s)
            controller._watch.start()
        return controller

    @property
    def status(self) -> ProxyStatus:
        """The latest status snapshot."""
        return self._board.status

    @property
    def target(self) -> Target:
        """The target new requests go to."""
        return self._plan.target

    @property
    def adds_key(self) -> bool:
        """True when the proxy puts the chosen target's key in, so tools need only a placeholder."""
        return adds_key(self._plan.target)

    def key_headers_by_target(self) -> dict[str, frozenset[str]]:
        """The credential headers (lower-case) each of the config's targets sets, read or not,
        in file order; empty without a config file."""
        return self._plan.key_headers_by_target()

    @property
    def settings(self) -> ProxySettings:
        """The listener settings the next start uses."""
        return self._plan.settings

    def add_listener(self, listener: StatusListener) -> None:
        """Call ``listener(status)`` on every change (on the thread that made it)."""
        self._board.add_listener(listener)

    def start(self) -> ProxyStatus:
        """Start listening; raise ListenError (also recorded in the status) if it cannot."""
        with self._lock:
            if self._listeners is not None:
                return self._board.status
            self._loop.start()
            listeners = Listeners(
                resolver_factory=self._resolver_factory,
                on_condition=self._on_condition,
                on_failover=self._on_failover,
                tap=self.inspector.tap,
                pages=self.inspector.pages,
                recall=self.recordings,
            )
            plan = self._plan
            try:
                report = self._loop.call(listeners.apply(plan.listeners), timeout=_apply_timeout(plan))
                if report.main.error is not None:
                    raise report.main.error
            except BaseException as exc:
                self._loop.shutdown()
                # A port another program holds is tried again (see _tick), as a moved one is.
                self._start_pending = isinstance(exc, ListenError) and exc.port_taken
                self._last_port_retry = time.monotonic()
                message = self._trouble.explain(exc, plan.settings.port)
                self._board.update(
                    state="error", addresses=(), error=message, target_ports=self._target_ports()
                )
                if isinstance(exc, ListenError) and message != str(exc):
                    raise ListenError(message, port_taken=exc.port_taken) from exc
                raise
            self._listeners, self._start_pending = listeners, False
            warn_of_unmarked_hosts(plan.settings)
            self._take(report, state="running")
            return self._board.status

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the proxy, giving open requests up to ``grace_s`` (default: the settings')."""
        with self._lock:
            listeners, self._listeners, self._report = self._listeners, None, None
            self._own_errors, self._main_error, self._start_pending = {}, None, False
            if listeners is not None:
                # Listeners retiring after a move finish by their own grace period at the latest.
                bound = max(grace_s or 0, self._plan.settings.stop_grace_s)
                try:
                    self._loop.call(listeners.stop(grace_s), timeout=CALL_TIMEOUT_S + bound)
                finally:
                    self._loop.shutdown()
            self.inspector.listening(())
            if self._board.status.state != "stopped":
                self._board.update(
                    state="stopped",
                    addresses=(),
                    error=None,
                    condition=None,
                    # The next start begins with no cool-downs (new listeners, new record).
                    cooling=(),
                    target_ports=self._target_ports(),
                )

    def close(self, grace_s: float | None = None) -> None:
        """Stop the proxy and stop following the config file (the app is quitting)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close(CALL_TIMEOUT_S)
        self.stop(grace_s)
        self.recordings.close()  # the writes already asked for finish first

    def set_target(self, target: Target) -> None:
        """Send new requests to ``target``; open requests and streams finish where they are."""
        with self._lock:
            self._install(self._plan.with_target(target))

    def choose_target(self, name: str) -> None:
        """Switch to the config's target ``name`` now and save it as the active one."""
        binding, config = self._binding, self._plan.config
        if binding is None or config is None:
            raise RuntimeError("choose_target needs a controller made with from_config")
        if name not in config.targets:
            raise KeyError(name)
        # The choice's fallbacks become reachable on the main port with it.
        unusable = ca_bundle_error(
            binding.path, config, binding.overrides, [name, *routed_targets(config, name)]
        )
        if unusable is not None:
            # Not switched: the engine could not build the target's TLS settings. The file is
            # where the fix goes, so the status says so the way it does for a broken edit.
            log.error(
                "target %s cannot be used; requests keep going to %s:\n%s",
                name,
                display_target(self.target),
                unusable,
            )
            with self._lock:
                self._plan = replace(self._plan, config_error=str(unusable))
                self._board.update(config_error=str(unusable))
            return

        def choice(base: Plan, attempt: int) -> Plan:
            # Targets on ports of their own stay as they are: the choice is the main port's, and
            # only the chosen target's key is read again if it could not be read before.
            assert base.config is not None
            again = {name} if attempt == 0 else ()
            plan = plan_for(
                base.config, binding.path, binding.overrides, self._keys, chosen=name, retry_keys=again
            )
            return replace(plan, config_error=base.config_error)

        with self._planned(choice) as (_, plan):
            self._install(plan)
        if binding.save_choice and not binding.pinned_target and config.active != name:
            try:
                set_active_target(binding.path, name)
            except (OSError, ConfigError, ValueError) as exc:
                log.error("could not save the chosen target in %s: %s", binding.path, exc)
            else:
                with self._lock:
                    saved = self._plan.config
                    if saved is not None and self._plan.chosen == name:
                        self._plan = replace(self._plan, config=replace(saved, active=name))

    def set_cache_mode(self, mode: str) -> None:
        """Record, replay or answer offline the chosen target's requests ("off": none of it), and
        save the mode in its table of the file; raise RuntimeError (why) when it cannot be saved,
        nothing changed then. Without a file (``serve --target URL``) it holds until the stop."""
        if mode not in options.CACHE_MODE.choices:
            raise ValueError(f"a cache mode is one of {', '.join(options.CACHE_MODE.choices)}, not {mode!r}")
        binding, name = self._binding, self._plan.chosen
        if binding is None or name is None:
            with self._lock:
                plan = self._plan
                main = replace(plan.main, target=replace(plan.target, cache=mode))
                self._install(replace(plan, listeners=(main, *plan.own_ports)))
            return
        try:
            set_cache_mode(binding.path, name, mode)
        except (OSError, ConfigError, ValueError) as exc:
            raise RuntimeError(f"could not save the cache mode of {name}: {exc}") from None
        # At once, rather than when the watcher next looks at the file.
        self.reload_config()

    def reload_config(self) -> bool:
        """Apply the config file as it is now; False (and the reason in the status) if it
        cannot be used, in which case the last good config keeps running."""
        binding = self._binding
        if binding is None:
            return False

        def edit(base: Plan, attempt: int) -> tuple[Plan, list[str]]:
            return follow(binding.path, binding.overrides, self._keys, base, chosen=binding.pinned_target)

        with self._planned(edit) as (old, (plan, notices)):
            if plan.config_error is not None:
                log.error(
                    "the config file has problems; the last good one stays in use:\n%s", plan.config_error
                )
                self._plan = replace(self._plan, config_error=plan.config_error)
                self._board.update(config_error=plan.config_error)
                return False
            self._board.update(log=plan.log)  # first, so what follows is logged as the file says
            for notice in notices:
                log.warning("%s", notice)
            if plan.key_problem:
                log.warning("%s", plan.key_problem)
            running = self._listeners is not None
            if running and (old.settings.allowed_hosts, old.settings.require_token) != (
                plan.settings.allowed_hosts,
                plan.settings.require_token,
            ):
                warn_of_unmarked_hosts(plan.settings)
            self._install(plan, reload=True)
        log.info("config reloaded from %s", binding.path)
        return True

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _planned(self, make: Callable[[Plan, int], T]) -> Iterator[tuple[Plan, T]]:
        """``make(current plan, attempt)``, run outside the lock (it may read keys, and a key
        command may take a while: Stop must not wait for it), then the lock held while the
        caller installs what it made, with the plan it was made from. Made again from the
        newer plan when another change came first, so an edit saved meanwhile (require_token
        turned on, say) is never undone by an older plan; the last attempt is made under the lock."""
        for attempt in range(PLAN_ATTEMPTS):
            base = self._plan
            made = make(base, attempt)
            with self._lock:
                if self._plan is base:
                    yield base, made
                    return
        with self._lock:
            base = self._plan
            yield base, make(base, PLAN_ATTEMPTS)

    def _install(self, plan: Plan, *, retry: bool = False, reload: bool = False) -> None:
        """Under the lock: make ``plan`` the one that runs; apply it if the proxy is running.
        ``retry``: the periodic retry of a taken port (says nothing new); ``reload``: an edit
        of the file (says again a move that still fails, as the edit asked for it again)."""
        # A new target leaves its predecessor's trouble behind, in the same snapshot.
        fields: dict[str, Any] = {"condition": None} if plan.target != self._plan.target else {}
        self._plan = plan
        listeners = self._listeners
        inspector = self.inspector
        if listeners is None:
            if plan.inspector != inspector.settings:
                inspector.configure(plan.inspector)  # no loop runs: nothing else touches it
            if plan.cache != self.recordings.settings:
                self.recordings.settings = plan.cache  # used from the next start on
            self._board.update(**fields, **plan_fields(plan), target_ports=self._target_ports())
            return
        if plan.inspector != inspector.settings:
            self._loop.call(self._configure_inspector(listeners, plan), timeout=CALL_TIMEOUT_S)
        if plan.cache != self.recordings.settings:
            self._loop.call(self._configure_recordings(plan), timeout=CALL_TIMEOUT_S)
        self._last_port_retry = time.monotonic()
        report = self._loop.call(listeners.apply(plan.listeners), timeout=_apply_timeout(plan))
        self._take(report, retry=retry, reload=reload, **fields)

    def inspector_link(self) -> tuple[str, Path | None]:
        """The inspector page's address, and a local file that opens it in a browser already
        let in (a one-time code inside, so none shows in a process list; None: no file could be
        written). Raises RuntimeError when the proxy is not running or the inspector is off."""
        with self._lock:
            listeners = self._listeners
            addresses = self._board.status.addresses
            if listeners is None or not addresses:
                raise RuntimeError("TrayProxy is not running: start it first")
            if not self.inspector.settings.enabled:
                raise RuntimeError("the inspector is switched off ([inspector] enabled = false)")
            inspector = self.inspector
            code = inspector.access.issue_code()  # safe from any thread (the access locks its codes)
            return inspector.page_url(addresses[0]), inspector.opener(addresses[0], code)

    async def _configure_recordings(self, plan: Plan) -> None:
        self.recordings.configure(plan.cache)

    async def _configure_inspector(self, listeners: Listeners, plan: Plan) -> None:
        self.inspector.configure(plan.inspector)
        listeners.set_capture(self.inspector.tap, self.inspector.pages)

    def _take(self, report: Report, *, retry: bool = False, reload: bool = False, **fields: Any) -> None:
        """Under the lock: what applying the plan gave, logged once and put in the status."""
        self._report = report
        main = report.main
        if report.main_lost:
            message = self._trouble.move_failed(main, None)
            log.error("the proxy %s", message)
            self.stop()
            self._board.update(state="error", error=message)
            return
        error = None
        if main.error is not None:
            error = self._trouble.move_failed(main, None)
            if not retry and (reload or error != self._main_error):
                log.error("the proxy %s", error)
        elif main.opened:
            warn_if_exposed(main.wanted.settings.hosts)
        self._main_error = error
        self._own_errors = self._trouble.own_port_errors(self._plan, report, self._own_errors)
        self._board.update(
            **fields,
            **plan_fields(self._plan),
            addresses=main.addresses,
            error=error,
            target_ports=self._target_ports(),
        )
        self.inspector.listening(main.addresses)

    def _target_ports(self) -> tuple[TargetPort, ...]:
        return target_ports(self._plan, self._report, self._own_errors)

    def _tick(self, changed: bool) -> None:
        """The watcher thread, after its jobs: re-read a saved file; retry what is due."""
        due = self._refresh_due
        condition = self._board.status.condition
        if (
            due is not None
            and self._keys.refresh_due()
            and condition is not None
            and condition.kind == "key_rejected"
            and condition.target_name == due
        ):
            self._refresh_key(due)
        if changed:
            self.reload_config()
        elif time.monotonic() - self._last_port_retry < self._port_retry_s:
            return
        elif self._start_pending:
            with self._lock, contextlib.suppress(ListenError):  # still taken: the status says so
                if self._start_pending and self._listeners is None:
                    self.start()
        elif self._ports_to_retry():
            with self._lock:
                if self._listeners is not None:
                    self._install(self._plan, retry=True)

    @property
    def _port_retry_s(self) -> float:
        return self._binding.port_retry_s if self._binding is not None else PORT_RETRY_S

    def _ports_to_retry(self) -> bool:
        report = self._report
        return report is not None and report.has_errors

    def _on_failover(self, event: FailoverEvent) -> None:
        """On the loop thread: the latest failover and the targets cooling down, in the status."""
        # The engine's times are the loop's (monotonic); people read the wall clock.
        offset = time.time() - time.monotonic()
        self._board.update(
            failover=FailoverNotice(event.failed, event.cause, event.next, time.time()),
            cooling=tuple((name, end + offset) for name, end in event.cooling),
        )

    def _on_condition(self, condition: TargetCondition) -> None:
        """On the loop thread: keep the chosen target's trouble in the status; re-fetch a
        command key (of the chosen target, one on a port of its own, or one a route sends to)."""
        # Named as shown (display_target): a config target by its name, one without by its URL.
        name = condition.target_name
        chosen = name == display_target(self._plan.target)
        if not chosen and self._plan.own(name) is None and name not in _routed_names(self._plan):
            return  # an answer from a target switched away from
        if chosen:
            self._board.update(condition=None if condition.kind == "ok" else condition)
        if condition.kind == "key_rejected" and condition.status == 401 and self._watch is not None:
            self._watch.put(lambda: self._refresh_key(name))

    def _refresh_key(self, display_name: str) -> None:
        """The watcher thread: run the key command of the target that rejected its key again
        (at most once per interval) and serve the new key."""
        binding, config = self._binding, self._plan.config
        if binding is None or config is None:
            return
        served_by_name = self._plan.own(display_name) is not None or display_name in _routed_names(self._plan)
        name = display_name if served_by_name else self._plan.chosen
        spec = config.targets.get(name) if name is not None else None
        if spec is None or spec.name != display_name:
            return
        if not key_refreshes(spec):
            return  # asking its source again gives the same key
        resolved = self._keys.refresh(spec)
        if resolved is None:
            # Too soon; the watcher tries again once the interval is over if the target still
            # rejects the key (no new 401 would report it: the condition has not changed).
            if self._plan.own(display_name) is None:
                self._refresh_due = display_name
            return
        self._refresh_due = None
        if resolved.problem:
            log.warning("%s", resolved.problem)

        def fresh_key(base: Plan, attempt: int) -> Plan:
            # No other key is read again: the one just read is the news.
            assert base.config is not None
            plan = plan_for(
                base.config, binding.path, binding.overrides, self._keys, chosen=base.chosen, retry_keys=()
            )
            return replace(plan, config_error=base.config_error)

        with self._planned(fresh_key) as (old, plan):
            if plan.listeners != old.listeners and not resolved.problem:
                log.info("target %s rejected its key; ran the key command again for a new one", name)
            self._install(plan)


def _routed_names(plan: Plan) -> set[str]:
    """The targets routes or failover send requests to, besides the listeners' own."""
    return {
        target.name
        for listener in plan.listeners
        if listener.routing is not None
        for target in listener.routing.targets
    }


def _apply_timeout(plan: Plan) -> float:
    """Bound on one reconcile: a call's bound per listener, since each may have to find out who
    holds its port (a probe that waits for an answer) before giving up on it."""
    return CALL_TIMEOUT_S * len(plan.listeners)
