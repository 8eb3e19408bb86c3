"""ProxyController: the proxy on its own asyncio loop in a background thread, following the config.

The one owner of threads and an event loop. Front ends (``trayproxy serve``, the tray) call its
methods from their own thread; each call is handed to the loop with ``run_coroutine_threadsafe``
and waited for with a bound. State leaves as an immutable :class:`ProxyStatus` snapshot, handed
to listeners on whichever thread made the change: a listener must only store it and ask its own
thread to refresh, never touch UI objects there.

Made with :meth:`ProxyController.from_config`, it also follows the config file: a watcher
thread re-reads it when it changes (an invalid edit keeps the last good config running and is
reported in the status and the log), fetches a command key again when the target answers 401,
and :meth:`choose_target` switches live and saves the choice in the file.

Listeners: the main one serves the chosen target on the listen port; a target with a port of its
own (``port = 8001`` in its table) is also served there, by a :class:`ProxyService` of its own on
the same loop, whatever target is chosen. When the file moves a listener to another address,
the new address is bound first and the old one then closes the way Stop does (open requests get
the grace period), so a taken port leaves the old listener serving and says who holds it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp.abc import AbstractResolver

from desktop.config.cabundle import target_ca_bundle_problem
from desktop.config.keys import ResolvedTarget, key_refreshes, protect_in_file_keys, resolve_target
from desktop.config.localtoken import settings_with_token, token_path
from desktop.config.model import LogSettings, ProxySettings, Secret, Target
from desktop.config.parse import ConfigError, ConfigFile, Problem, TargetSpec
from desktop.config.store import load_config, set_active_target
from desktop.engine.condition import TargetCondition, adds_key
from desktop.engine.eventloop import new_event_loop
from desktop.engine.guard import unmarked_host_warnings
from desktop.engine.service import ListenError, ProxyService, host_port
from desktop.engine.upstream import is_loopback
from desktop.redaction import CREDENTIAL_HEADERS as CLIENT_CREDENTIAL_HEADERS
from desktop.redaction import display_target, redact_url

__all__ = ["ConfigBinding", "ListenError", "ProxyController", "ProxyStatus", "TargetPort"]

log = logging.getLogger("trayproxy.controller")

T = TypeVar("T")
State = Literal["stopped", "running", "error"]
# Bound on one call into the loop, beyond the stop grace period.
CALL_TIMEOUT_S = 15.0
# A few loop turns for closing transports to finish before the loop is closed.
TRANSPORT_SETTLE_S = 0.05
# How often the watcher looks at the config file: edits apply within this, and a stat call a
# second costs nothing (inotify/FSEvents would need a dependency per OS for no visible gain).
CONFIG_POLL_S = 1.0
# A key command is run again after a 401 at most this often, so a key the target really
# rejects does not run a password manager (or open an SSO page) on every request.
KEY_REFRESH_MIN_INTERVAL_S = 30.0
# A listener that could not be opened or moved (its port taken by another program) is tried
# again this often, so it opens soon after the other program lets go, without a save or Reload.
PORT_RETRY_S = 5.0


def _local_url(addresses: tuple[tuple[str, int], ...]) -> str | None:
    return "http://" + host_port(*addresses[0]) if addresses else None


def _where(addresses: Iterable[tuple[str, int]]) -> str:
    return ", ".join(host_port(host, port) for host, port in addresses)


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
    # Credential headers (lower-case) its entry sets, read or not (see key_headers_of).
    key_headers: frozenset[str] = frozenset()

    @property
    def local_url(self) -> str | None:
        """The base URL tools should use for this target, e.g. ``http://127.0.0.1:8001``."""
        return _local_url(self.addresses)


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
_STOP_WATCHING = object()


@dataclass(frozen=True)
class ConfigBinding:
    """How a controller follows a config file."""

    path: Path
    # A target name that stays chosen whatever ``active`` says (``serve --target NAME``).
    pinned_target: str | None = None
    # Command-line overrides applied to every target and to the listener settings.
    adjust_target: Callable[[Target], Target] = field(default=lambda target: target)
    adjust_settings: Callable[[ProxySettings], ProxySettings] = field(default=lambda settings: settings)
    # Save choose_target's choice as ``active`` in the file.
    save_choice: bool = True
    # Re-read the file when it changes.
    watch: bool = True
    # Called with the file's [log] settings, at first and on every reload (``serve``'s -v and -q
    # are applied on top there: the controller does not own logging).
    apply_log: Callable[[LogSettings], None] = field(default=lambda settings: None)


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
    ) -> None:
        """``port_holder(port)`` names the program holding a taken port, for the error (the
        OS glue lives in ``desktop.platforms.ports``; the front end hands it in).
        ``port_advice(target)`` says where to choose another port, for the main listener
        (``target`` None) or a target's own: a command-line flag, a setting in the file; only
        the front end knows which it reads."""
        self._settings = settings
        self._port_advice = port_advice
        self._target = target
        self._resolver_factory = resolver_factory
        # Held for start/stop/switch, which wait on the loop. Never taken on the loop thread.
        self._lock = threading.RLock()
        # Held briefly to publish a snapshot, from any thread (the loop's included).
        self._status_lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._service: ProxyService | None = None
        self._port_holder = port_holder
        # Targets with a port of their own, from the file: name -> (port, target).
        self._wanted_ports: dict[str, tuple[int, Target]] = {}
        # Their listeners while running, and why one is not listening, or not where the file says.
        self._port_services: dict[str, ProxyService] = {}
        self._port_errors: dict[str, str] = {}
        self._port_key_problems: dict[str, str] = {}
        # Listeners closed by a move or a removed target, finishing their open requests (loop only).
        self._retiring: set[asyncio.Task[None]] = set()
        self._listeners: list[StatusListener] = []
        self._status = ProxyStatus("stopped", display_target(target), redact_url(target.url))
        self._binding: ConfigBinding | None = None
        self._config: ConfigFile | None = None
        self._watcher: threading.Thread | None = None
        # Work for the watcher thread: callables, or _STOP_WATCHING.
        self._jobs: queue.Queue[object] = queue.Queue()
        # Not 0.0: the monotonic clock may start at boot, and an app started at login within
        # KEY_REFRESH_MIN_INTERVAL_S of it would otherwise skip its first refresh.
        self._last_key_refresh = float("-inf")
        self._last_port_retry = float("-inf")
        # A target whose key refresh was skipped as too soon, to retry when the interval ends.
        self._refresh_due: str | None = None
        # Per target name: its file entry and what reading its key gave, so a reload that leaves
        # the entry as it was does not read the key again (see _resolve).
        self._resolved: dict[str, tuple[TargetSpec, ResolvedTarget]] = {}

    @classmethod
    def from_config(
        cls,
        binding: ConfigBinding,
        *,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        port_holder: Callable[[int], str | None] | None = None,
        port_advice: Callable[[str | None], str] | None = None,
    ) -> ProxyController:
        """A controller for the file's target (or the pinned one); raise ConfigError when the
        file cannot be used, KeyError when the pinned target is not in it."""
        config = load_config(binding.path)
        name = binding.pinned_target or config.active
        if name not in config.targets:
            raise KeyError(name)
        unusable = _ca_bundle_error(binding, config, [name, *config.target_ports()])
        if unusable is not None:
            raise unusable
        notice = protect_in_file_keys(binding.path, config)
        if notice:
            log.warning("%s", notice)
        spec = config.targets[name]
        resolved = resolve_target(spec)
        binding.apply_log(config.log)
        controller = cls(
            settings_with_token(binding.adjust_settings(config.settings), binding.path),
            binding.adjust_target(resolved.target),
            resolver_factory=resolver_factory,
            port_holder=port_holder,
            port_advice=port_advice,
        )
        controller._binding, controller._config = binding, config
        controller._resolved[name] = (spec, resolved)
        controller._wanted_ports = controller._resolve_ports(config)
        controller._update(
            targets=tuple(config.targets),
            config_path=str(binding.path),
            local_token=controller._settings.local_token,
            key_problem=resolved.problem,
            target_ports=controller._ports_snapshot(),
            key_headers=controller._key_headers_of(controller._target),
        )
        if binding.watch:
            controller._watcher = threading.Thread(
                target=controller._watch, name="trayproxy-config", daemon=True
            )
            controller._watcher.start()
        return controller

    @property
    def status(self) -> ProxyStatus:
        """The latest status snapshot."""
        return self._status

    @property
    def target(self) -> Target:
        """The target new requests go to."""
        return self._target

    @property
    def adds_key(self) -> bool:
        """True when the proxy puts the chosen target's key in, so tools need only a placeholder."""
        return adds_key(self._target)

    def key_headers_by_target(self) -> dict[str, frozenset[str]]:
        """The credential headers (lower-case) each of the config's targets sets, read or not,
        in file order; empty without a config file. Copy environment names a target made for a
        tool that no port serves."""
        if self._config is None:
            return {}
        return {
            name: frozenset(header.lower() for header, _ in spec.headers) & CLIENT_CREDENTIAL_HEADERS
            for name, spec in self._config.targets.items()
        }

    @property
    def settings(self) -> ProxySettings:
        """The listener settings the next start uses."""
        return self._settings

    def add_listener(self, listener: StatusListener) -> None:
        """Call ``listener(status)`` on every change (on the thread that made it)."""
        self._listeners.append(listener)

    def start(self) -> ProxyStatus:
        """Start listening; raise ListenError (also recorded in the status) if it cannot."""
        with self._lock:
            if self._service is not None:
                return self._status
            loop = new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="trayproxy-loop", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                service = self._call(self._start_service(self._settings, self._target))
            except BaseException as exc:
                self._shutdown_loop()
                message = self._explain(exc, self._settings.port)
                self._update(state="error", addresses=(), error=message)
                if isinstance(exc, ListenError) and message != str(exc):
                    raise ListenError(message, port_taken=exc.port_taken) from exc
                raise
            self._service = service
            _warn_if_exposed(self._settings.hosts)
            _warn_of_unmarked_hosts(self._settings)
            self._update(state="running", addresses=tuple(service.addresses), error=None)
            self._sync_ports()
            return self._status

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the proxy, giving open requests up to ``grace_s`` (default: the settings')."""
        with self._lock:
            service, self._service = self._service, None
            services = [service, *self._port_services.values()] if service is not None else []
            self._port_services.clear()
            self._port_errors.clear()
            if services:
                # Listeners retiring after a move finish by their own grace period at the latest.
                bound = max(grace_s or 0, self._settings.stop_grace_s)
                try:
                    self._call(self._stop_all(services, grace_s), timeout=CALL_TIMEOUT_S + bound)
                finally:
                    self._shutdown_loop()
            if self._status.state != "stopped":
                self._update(
                    state="stopped",
                    addresses=(),
                    error=None,
                    condition=None,
                    target_ports=self._ports_snapshot(),
                )

    def close(self, grace_s: float | None = None) -> None:
        """Stop the proxy and stop following the config file (the app is quitting)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self._jobs.put(_STOP_WATCHING)
            watcher.join(CALL_TIMEOUT_S)
        self.stop(grace_s)

    def set_target(self, target: Target) -> None:
        """Send new requests to ``target``; open requests and streams finish where they are."""
        with self._lock:
            changed = target != self._target
            self._target = target
            service = self._service
            if service is not None:
                self._call(self._on_loop(lambda: service.set_target(target)))
            fields: dict[str, Any] = {
                "target_name": display_target(target),
                "target_url": redact_url(target.url),
                "key_headers": self._key_headers_of(target),
            }
            if changed:
                fields["condition"] = None
            self._update(**fields)

    def choose_target(self, name: str) -> None:
        """Switch to the config's target ``name`` now and save it as the active one."""
        binding, config = self._binding, self._config
        if binding is None or config is None:
            raise RuntimeError("choose_target needs a controller made with from_config")
        if name not in config.targets:
            raise KeyError(name)
        unusable = _ca_bundle_error(binding, config, [name])
        if unusable is not None:
            # Not switched: the engine could not build the target's TLS settings. The file is
            # where the fix goes, so the status says so the way it does for a broken edit.
            log.error(
                "target %s cannot be used; requests keep going to %s:\n%s", name, display_target(self._target), unusable
            )
            self._update(config_error=str(unusable))
            return
        resolved = self._resolve(config.targets[name])
        self.set_target(binding.adjust_target(resolved.target))
        self._update(key_problem=resolved.problem)
        # Targets on ports of their own stay as they are: the choice is the main port's.
        if binding.save_choice and not binding.pinned_target and config.active != name:
            try:
                set_active_target(binding.path, name)
            except (OSError, ConfigError, ValueError) as exc:
                log.error("could not save the chosen target in %s: %s", binding.path, exc)
            else:
                self._config = replace(config, active=name)

    def reload_config(self) -> bool:
        """Apply the config file as it is now; False (and the reason in the status) if it
        cannot be used, in which case the last good config keeps running."""
        binding = self._binding
        if binding is None:
            return False
        try:
            config = load_config(binding.path)
        except ConfigError as exc:
            log.error("the config file has problems; the last good one stays in use:\n%s", exc)
            self._update(config_error=str(exc))
            return False
        name = binding.pinned_target or config.active
        if name not in config.targets:
            message = f"{binding.path}: target '{name}' is no longer in the file"
            log.error("%s; the last good config stays in use", message)
            self._update(config_error=message)
            return False
        unusable = _ca_bundle_error(binding, config, [name, *config.target_ports()])
        if unusable is not None:
            log.error("the config file has problems; the last good one stays in use:\n%s", unusable)
            self._update(config_error=str(unusable))
            return False
        notice = protect_in_file_keys(binding.path, config)
        if notice:
            log.warning("%s", notice)
        self._config = config
        binding.apply_log(config.log)
        settings = settings_with_token(binding.adjust_settings(config.settings), binding.path)
        resolved = self._resolve(config.targets[name])
        if resolved.problem:
            log.warning("%s", resolved.problem)
        self._wanted_ports = self._resolve_ports(config)
        with self._lock:
            if self._service is not None:
                self._release_claimed_ports(settings.port)
            self._apply_settings(settings)
        self.set_target(binding.adjust_target(resolved.target))
        with self._lock:
            if self._service is not None:
                self._sync_ports()
            self._update(
                targets=tuple(config.targets),
                config_error=None,
                local_token=settings.local_token,
                key_problem=resolved.problem,
                target_ports=self._ports_snapshot(),
            )
        log.info("config reloaded from %s", binding.path)
        return True

    # -- internals ---------------------------------------------------------------------

    def _apply_settings(self, settings: ProxySettings, *, retry: bool = False) -> None:
        with self._lock:
            old, self._settings = self._settings, settings
            service = self._service
            if service is None:
                return
            if (old.allowed_hosts, old.allowed_origins) != (settings.allowed_hosts, settings.allowed_origins):
                for each in (service, *self._port_services.values()):
                    self._on_loop_call(each.set_policy, settings.allowed_hosts, settings.allowed_origins)
            if (old.allowed_hosts, old.require_token) != (settings.allowed_hosts, settings.require_token):
                _warn_of_unmarked_hosts(settings)
            if (old.require_token, old.local_token) != (settings.require_token, settings.local_token):
                for each in (service, *self._port_services.values()):
                    self._on_loop_call(each.set_local_token, settings.require_token, settings.local_token)
            if _address(service.settings) == _address(settings):
                self._update(error=None)  # a move that failed earlier is no longer asked for
                return
            moved, error = self._relocate("the proxy", service, settings, self._target, log_failure=not retry)
            if moved is None:
                self.stop()
                self._update(state="error", error=error)
                return
            self._service = moved
            if error is None:
                _warn_if_exposed(settings.hosts)
            self._update(addresses=tuple(moved.addresses), error=error)

    def _sync_ports(self) -> None:
        """Under the lock, while running: a listener for each target with a port of its own,
        where the file says, on that target; the others closed (open requests finish)."""
        main = self._service
        assert main is not None
        main_ports = {port for _, port in main.addresses}
        self._last_port_retry = time.monotonic()
        before, self._port_errors = self._port_errors, {}
        for name in list(self._port_services):
            if name not in self._wanted_ports or self._wanted_ports[name][0] in main_ports:
                gone = self._port_services.pop(name)
                log.info("target %s is no longer served on port %d", name, gone.port)
                self._call(self._retire(gone))
        for name, (port, target) in self._wanted_ports.items():
            settings = replace(self._settings, port=port)
            service = self._port_services.get(name)
            if port in main_ports:  # possible when --port overrides the file
                self._port_errors[name] = f"port {port} is the main listener's port"
            elif service is None:
                try:
                    self._port_services[name] = self._call(self._start_service(settings, target))
                except ListenError as exc:
                    self._port_errors[name] = self._explain(exc, port, name)
                    if name not in before:  # said once, not at every retry
                        log.error("target %s is not served on port %d: %s", name, port, self._port_errors[name])
                else:
                    log.info("target %s is also served on %s", name, _where(self._port_services[name].addresses))
            elif _address(service.settings) != _address(settings):
                moved, error = self._relocate(
                    f"target {name}", service, settings, target, log_failure=name not in before, own=name
                )
                if moved is None:
                    del self._port_services[name]
                else:
                    self._port_services[name] = moved
                if error is not None:
                    self._port_errors[name] = error
            elif service.target != target:
                self._on_loop_call(service.set_target, target)
        self._update(target_ports=self._ports_snapshot())

    def _release_claimed_ports(self, main_port: int) -> None:
        """Under the lock, before moving: close the listeners of targets leaving a port that
        another listener now wants, so swapped ports (main 8000 and anthropic 8001 trading
        places) free each other instead of each finding the other's port taken."""
        claimed: dict[int, str | None] = {port: name for name, (port, _) in self._wanted_ports.items()}
        claimed[main_port] = None  # the main listener's
        for name, service in list(self._port_services.items()):
            wanted = self._wanted_ports[name][0] if name in self._wanted_ports else None
            if service.port != wanted and service.port in claimed and claimed[service.port] != name:
                log.info("target %s leaves port %d for %s", name, service.port, claimed[service.port] or "the proxy")
                self._call(self._retire(self._port_services.pop(name)))

    def _relocate(
        self,
        what: str,
        service: ProxyService,
        settings: ProxySettings,
        target: Target,
        *,
        log_failure: bool = True,
        own: str | None = None,
    ) -> tuple[ProxyService | None, str | None]:
        """Under the lock: ``service`` moved to ``settings``' address (see _move), logged; with
        the reason when the move failed, naming the port and who holds it. ``own``: the target
        whose own port this is, None for the main listener."""
        before = list(service.addresses)
        moved, error = self._call(self._move(service, settings, target))
        if error is None:
            assert moved is not None
            log.info(
                "%s now listens on %s; requests open on %s finish there (open WebSockets are told 1001 to reconnect)",
                what,
                _where(moved.addresses),
                _where(before),
            )
            return moved, None
        wanted = _where([(host, settings.port) for host in settings.hosts])
        message = f"could not move to {wanted}: {self._explain(error, settings.port, own)}"
        if moved is not None:
            message += f"; still listening on {_where(moved.addresses)}"
        if log_failure:
            log.error("%s %s", what, message)
        return moved, message

    def _resolve_ports(self, config: ConfigFile) -> dict[str, tuple[int, Target]]:
        """The targets with a port of their own, their keys read (see _resolve)."""
        binding = self._binding
        assert binding is not None
        wanted: dict[str, tuple[int, Target]] = {}
        self._port_key_problems = {}
        for name, port in config.target_ports().items():
            resolved = self._resolve(config.targets[name])
            if resolved.problem:
                self._port_key_problems[name] = resolved.problem
            wanted[name] = (port, binding.adjust_target(resolved.target))
        return wanted

    def _ports_snapshot(self) -> tuple[TargetPort, ...]:
        ports = []
        for name, (port, target) in self._wanted_ports.items():
            service = self._port_services.get(name)
            ports.append(
                TargetPort(
                    name=name,
                    target_url=redact_url(target.url),
                    port=port,
                    addresses=tuple(service.addresses) if service is not None else (),
                    error=self._port_errors.get(name),
                    key_problem=self._port_key_problems.get(name),
                    adds_key=adds_key(target),
                    key_headers=self._key_headers_of(target),
                )
            )
        return tuple(ports)

    def _key_headers_of(self, target: Target) -> frozenset[str]:
        """The credential headers ``target`` gets, and those its file entry sets with a key that
        could not be read (left out of ``target``, yet still what the target is made for)."""
        names = {name.lower() for name, _ in target.add_headers}
        spec = self._config.targets.get(target.name) if self._config is not None else None
        if spec is not None:
            names.update(name.lower() for name, _ in spec.headers)
        return frozenset(names & CLIENT_CREDENTIAL_HEADERS)

    def _explain(self, error: BaseException | None, port: int, target: str | None = None) -> str:
        """The message for a listener (the main one, or ``target``'s own) that could not open,
        saying where to choose another port when it is taken and naming who holds it."""
        if not isinstance(error, ListenError):
            return f"could not start: {error!r}"
        message = str(error)
        if error.port_taken and self._port_advice is not None:
            message += f" ({self._port_advice(target)})"
        cause = error.__cause__
        if self._port_holder is not None and isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            try:
                holder = self._port_holder(port)
            except Exception:  # best effort: the message is worth more than the detail
                log.debug("could not tell who holds port %d", port, exc_info=True)
                holder = None
            if holder:
                message += f" — held by {holder}"
        return message

    def _watch(self) -> None:
        """The watcher thread: run queued jobs; re-read the file when it has changed."""
        binding = self._binding
        assert binding is not None
        # The token file too: `trayproxy config token --rotate` takes effect like an edit.
        seen = (_file_signature(binding.path), _file_signature(token_path(binding.path)))
        while True:
            try:
                job = self._jobs.get(timeout=CONFIG_POLL_S)
            except queue.Empty:
                job = None
            if job is _STOP_WATCHING:
                return
            try:
                if callable(job):
                    job()
                due = self._refresh_due
                if (
                    due is not None
                    and time.monotonic() - self._last_key_refresh >= KEY_REFRESH_MIN_INTERVAL_S
                    and self._status.condition is not None
                    and self._status.condition.kind == "key_rejected"
                    and self._status.condition.target_name == due
                ):
                    self._refresh_key(due)
                current = (_file_signature(binding.path), _file_signature(token_path(binding.path)))
                if current != seen:
                    seen = current
                    self.reload_config()
                elif self._ports_to_retry() and time.monotonic() - self._last_port_retry >= PORT_RETRY_S:
                    self._retry_ports()
            except Exception:
                log.exception("config watcher job failed")

    def _main_move_pending(self) -> bool:
        """The main listener is not where the settings say: its move failed (port taken)."""
        service = self._service
        return service is not None and _address(service.settings) != _address(self._settings)

    def _ports_to_retry(self) -> bool:
        return bool(self._port_errors) or self._main_move_pending()

    def _retry_ports(self) -> None:
        """Watcher thread: move the main listener where the file says if that failed last time
        (its new port was taken), and open the own ports that could not be opened or moved."""
        self._last_port_retry = time.monotonic()
        with self._lock:
            if self._main_move_pending():
                self._apply_settings(self._settings, retry=True)
            if self._service is not None and self._port_errors:
                self._sync_ports()

    def _on_condition(self, condition: TargetCondition) -> None:
        """On the loop thread: keep the chosen target's trouble in the status; re-fetch a
        command key (of the chosen target or one on a port of its own)."""
        # Named as shown (display_target): a config target by its name, one without by its URL.
        name = condition.target_name
        chosen = name == display_target(self._target)
        if not chosen and name not in self._wanted_ports:
            return  # an answer from a target switched away from
        if chosen:
            self._update(condition=None if condition.kind == "ok" else condition)
        if condition.kind == "key_rejected" and condition.status == 401:
            self._jobs.put(lambda: self._refresh_key(name))

    def _refresh_key(self, display_name: str) -> None:
        binding, config = self._binding, self._config
        if binding is None or config is None:
            return
        name = binding.pinned_target or config.active
        if display_name in self._wanted_ports and display_name != name:
            self._refresh_port_key(display_name)
            return
        spec = config.targets.get(name)
        if spec is None or spec.name != display_name or not key_refreshes(spec):
            return
        resolved = self._rerun_key_command(name, spec)
        if resolved is None:
            # Too soon; the watcher tries again once the interval is over if the target still
            # rejects the key (no new 401 would report it: the condition has not changed).
            self._refresh_due = display_name
            return
        self._refresh_due = None
        target = binding.adjust_target(resolved.target)
        if resolved.problem:
            log.warning("%s", resolved.problem)
        elif target != self._target:
            log.info("target %s rejected its key; ran the key command again for a new one", name)
            self.set_target(target)
        self._update(key_problem=resolved.problem)
        if name in self._wanted_ports:
            self._refresh_port_key(name, resolved)

    def _rerun_key_command(self, name: str, spec: TargetSpec) -> ResolvedTarget | None:
        """``spec``'s key read again (its command run), at most once per
        KEY_REFRESH_MIN_INTERVAL_S across targets; None when that is too soon."""
        if time.monotonic() - self._last_key_refresh < KEY_REFRESH_MIN_INTERVAL_S:
            return None
        self._last_key_refresh = time.monotonic()
        resolved = resolve_target(spec)
        self._resolved[name] = (spec, resolved)
        return resolved

    def _refresh_port_key(self, name: str, resolved: ResolvedTarget | None = None) -> None:
        """Run the key command of ``name``, served on a port of its own, again (at most once
        per KEY_REFRESH_MIN_INTERVAL_S) and give its listener the new key."""
        binding, config = self._binding, self._config
        if binding is None or config is None:
            return
        spec = config.targets.get(name)
        if spec is None or not key_refreshes(spec):
            return
        if resolved is None:
            resolved = self._rerun_key_command(name, spec)
            if resolved is None:
                return  # too soon
        with self._lock:
            if name not in self._wanted_ports:
                return
            port, target = self._wanted_ports[name][0], binding.adjust_target(resolved.target)
            self._wanted_ports[name] = (port, target)
            if resolved.problem:
                self._port_key_problems[name] = resolved.problem
            else:
                self._port_key_problems.pop(name, None)
            service = self._port_services.get(name)
            if service is not None and service.target != target:
                log.info("target %s rejected its key; ran the key command again for a new one", name)
                self._on_loop_call(service.set_target, target)
            self._update(target_ports=self._ports_snapshot())

    def _resolve(self, spec: TargetSpec) -> ResolvedTarget:
        """The target for ``spec``, reading its key only when the entry is new or changed.

        Saving the file (choose_target's own write, or a person adding an allowed host) must
        not run a key command again: it may unlock a password manager or open an SSO page,
        and a fresh token would sidestep KEY_REFRESH_MIN_INTERVAL_S. A key that could not be
        read last time is tried again, since the edit may be the fix."""
        cached = self._resolved.get(spec.name)
        if cached is not None and cached[1].problem is None and _same_entry(cached[0], spec):
            return cached[1]
        resolved = resolve_target(spec)
        self._resolved[spec.name] = (spec, resolved)
        return resolved

    async def _start_service(self, settings: ProxySettings, target: Target) -> ProxyService:
        resolver = self._resolver_factory() if self._resolver_factory else None
        service = ProxyService(settings, target, resolver=resolver, on_condition=self._on_condition)
        await service.start()
        return service

    async def _move(
        self, old: ProxyService, settings: ProxySettings, target: Target
    ) -> tuple[ProxyService | None, BaseException | None]:
        """A listener at ``settings``' address in place of ``old``, and the error if there is
        none: (new, None); (old, error) when the new address cannot be had; (None, error) when
        even the old address could not be taken back. ``old`` is retired on success: it stops
        accepting and its open requests get its grace period, as on Stop.

        A new port is bound while ``old`` still listens, so a taken port changes nothing. Other
        hosts on the same port cannot be bound next to ``old`` (0.0.0.0:P conflicts with
        127.0.0.1:P), so ``old`` closes its listening sockets first, for the time of one bind,
        and takes its address back if the new hosts fail."""
        old_port = old.port  # the port the OS picked, when the settings say 0
        same_port = settings.port == old_port
        if same_port:
            await old.stop_listening()
        try:
            new = await self._start_service(settings, target)
        except Exception as exc:
            if not same_port:
                return old, exc
            try:
                back = await self._start_service(replace(old.settings, port=old_port), old.target)
            except Exception:
                log.exception("could not listen on port %d again", old_port)
                back = None
            await self._retire(old)
            return back, exc
        await self._retire(old)
        return new, None

    async def _retire(self, service: ProxyService) -> None:
        """Close ``service``'s listening sockets now, so its address is free when this returns,
        and stop it in the background: open requests get its grace period, as on Stop."""
        await service.stop_listening()
        task = asyncio.get_running_loop().create_task(self._stop_quietly(service), name="retire-listener")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _stop_quietly(service: ProxyService, grace_s: float | None = None) -> None:
        try:
            await service.stop(grace_s)
        except Exception:
            log.exception("a listener did not stop cleanly")

    async def _stop_all(self, services: list[ProxyService], grace_s: float | None) -> None:
        """Stop every listener, and wait for those retiring to finish their grace period."""
        await asyncio.gather(*(self._stop_quietly(service, grace_s) for service in services))
        if self._retiring:
            await asyncio.gather(*self._retiring)

    def _on_loop_call(self, action: Callable[..., object], *args: Any) -> None:
        """Run ``action(*args)`` on the loop and wait for it (a service's methods are not
        thread-safe)."""
        self._call(self._on_loop(functools.partial(action, *args)))

    @staticmethod
    async def _on_loop(action: Callable[[], object]) -> None:
        action()

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
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            # A connection accepted just as the listener closed is handed over in a task of
            # asyncio's own; cancelled before its first step, it never closes the socket (a
            # ResourceWarning under load). Let those run: the stopped server aborts them.
            accepting = [t for t in rest if getattr(t.get_coro(), "__qualname__", "").endswith("_accept_connection2")]
            if accepting:
                await asyncio.wait(accepting, timeout=TRANSPORT_SETTLE_S * 10)
            # Anything still scheduled (a pool closing, a pump ending) gets to finish.
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

    def _update(self, **fields: Any) -> None:
        """Publish a snapshot with ``fields`` changed; listeners run here, in order."""
        with self._status_lock:
            status = replace(self._status, **fields)
            if status == self._status:
                return
            self._status = status
            for listener in list(self._listeners):
                try:
                    listener(status)
                except Exception:
                    log.exception("status listener failed")


def _address(settings: ProxySettings) -> tuple[tuple[str, ...], int]:
    return (settings.hosts, settings.port)


def _warn_if_exposed(hosts: tuple[str, ...]) -> None:
    for host in hosts:
        if not is_loopback(host):
            log.warning("listening on %s: other machines that can reach it can use the keys this proxy adds", host)


def _warn_of_unmarked_hosts(settings: ProxySettings) -> None:
    for warning in unmarked_host_warnings(settings.allowed_hosts, require_token=settings.require_token):
        log.warning("%s", warning)


def _same_entry(old: TargetSpec, new: TargetSpec) -> bool:
    """True when ``new`` is ``old`` as written, wherever it now sits in the file."""
    return replace(old, key_position=new.key_position, ca_bundle_position=new.ca_bundle_position) == new


def _ca_bundle_error(binding: ConfigBinding, config: ConfigFile, names: Iterable[str]) -> ConfigError | None:
    """The error for the targets ``names`` (as the command line adjusts them) whose CA bundle
    TLS cannot load, at its line in the file; None when all can be used. Checked before a target
    reaches the engine, which would fail building its TLS settings (config/cabundle.py)."""
    problems = []
    for name in dict.fromkeys(names):
        spec = config.targets[name]
        # The key is not read: a key command must not run for a check (see _resolve).
        tls = binding.adjust_target(Target(url=spec.url, verify_tls=spec.verify_tls, ca_bundle=spec.ca_bundle))
        problem = target_ca_bundle_problem(tls)
        if problem:
            problems.append(Problem(*spec.ca_bundle_position, problem))
    return ConfigError(str(binding.path), problems) if problems else None


def _file_signature(path: Path) -> tuple[int, int, int, bytes] | None:
    """What changes when the file is saved: time, size and inode (an atomic rename changes
    the inode), and a digest of the bytes, for an in-place save of the same length on a file
    system whose timestamps are too coarse to move (FAT: 2 s, HFS+: 1 s). The file is small;
    reading it once a second costs next to nothing."""
    try:
        info = os.stat(path)
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino, digest)
