"""One way from the config file to a running shape: file + command-line overrides + keys -> Plan.

:func:`read_config` reads and checks the file, :func:`tend_files` makes the writes a file may
call for (narrowing a file that holds a key, making the local token), and :func:`plan_for`
turns the result into a :class:`Plan`: the listeners with their targets' keys read and their
routes (:func:`routed_targets` says which targets a port's requests can reach), the chosen
target, the problems to show. Start-up and every reload take the same steps; an unusable edit
leaves the last good plan running, with the reason beside it (:func:`follow`).

Reading never writes: the writes are the explicit step in between, which the caller takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from desktop.config.cabundle import target_ca_bundle_problem
from desktop.config.keys import ResolvedTarget, key_refreshes, protect_in_file_keys, resolve_target
from desktop.config.localtoken import LocalTokenError, ensure_token, load_token, token_path
from desktop.config.model import (
    Inspection,
    Listener,
    LogSettings,
    ProxySettings,
    Recording,
    Routing,
    Secret,
    Target,
)
from desktop.config.parse import ConfigError, ConfigFile, Problem, TargetSpec
from desktop.config.store import load_config
from desktop.redaction import CREDENTIAL_HEADERS, is_credential_name, looks_like_key
from desktop.routing import RouteTable, TargetClaims

__all__ = [
    "KeyReader",
    "Overrides",
    "Plan",
    "follow",
    "listener_settings",
    "plan_for",
    "read_config",
    "routed_targets",
    "tend_files",
]

log = logging.getLogger("trayproxy.config")

# A key command is run again after a 401 at most this often, so a key the target really
# rejects does not run a password manager (or open an SSO page) on every request.
KEY_REFRESH_MIN_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the command line (``serve``'s flags) sets on top of the file, as data.

    Each field left at its default leaves the file's value alone."""

    hosts: tuple[str, ...] = ()
    port: int | None = None
    # Added to the file's lists.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    stop_grace_s: float | None = None
    access_log: bool | None = None
    # Set on every target, replacing the target's own header of the same name.
    headers: tuple[tuple[str, Secret], ...] = ()
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    insecure: bool = False
    ca_bundle: str | None = None
    keep_host: bool = False
    # serve --no-inspector, --no-inspector-bodies: switched off whatever the file says.
    no_inspector: bool = False
    no_inspector_bodies: bool = False
    # serve --cache MODE: the chosen target's cache mode, whatever the file says.
    cache: str | None = None

    def inspection(self, base: Inspection) -> Inspection:
        """``base`` (the file's [inspector]) with these overrides."""
        return replace(
            base,
            enabled=base.enabled and not self.no_inspector,
            keep_bodies=base.keep_bodies and not self.no_inspector_bodies,
        )

    def target(self, base: Target, *, chosen: bool = True) -> Target:
        """``base`` with these overrides; raise ValueError when they make it invalid. A header
        that carries a key (``--header "Authorization: Bearer ..."``) is for the target served
        by the main port (``chosen``): it never goes to the other targets routes and fallbacks
        reach, which are other services with keys of their own. So is ``--cache``: it sets the
        mode of the target serve is started for, not of the others."""
        headers = self.headers if chosen else tuple(item for item in self.headers if not _carries_key(*item))
        replaced = {name.lower() for name, _ in headers}
        kept = tuple((name, value) for name, value in base.add_headers if name.lower() not in replaced)
        return replace(
            base,
            add_headers=kept + headers,
            connect_timeout_s=_given(self.connect_timeout_s, base.connect_timeout_s),
            read_timeout_s=_given(self.read_timeout_s, base.read_timeout_s),
            verify_tls=base.verify_tls and not self.insecure,
            ca_bundle=self.ca_bundle or base.ca_bundle,
            keep_host=base.keep_host or self.keep_host,
            cache=self.cache if chosen and self.cache is not None else base.cache,
        )

    def settings(self, base: ProxySettings) -> ProxySettings:
        """``base`` (the file's listener settings) with these overrides."""
        return replace(
            base,
            hosts=self.hosts or base.hosts,
            port=base.port if self.port is None else self.port,
            allowed_hosts=base.allowed_hosts + self.allowed_hosts,
            allowed_origins=base.allowed_origins + self.allowed_origins,
            stop_grace_s=_given(self.stop_grace_s, base.stop_grace_s),
            access_log=base.access_log if self.access_log is None else self.access_log,
        )


def _carries_key(name: str, value: Secret) -> bool:
    """Whether the header ``name: value`` carries a key: a credential header's name (any API
    key header, "Ocp-Apim-Subscription-Key" and "x-portkey-api-key" alike) or a value shaped
    like one."""
    return name.lower() in CREDENTIAL_HEADERS or is_credential_name(name) or looks_like_key(value.reveal())


def _given(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


@dataclass(frozen=True)
class Plan:
    """What should be running, as of one reading of the file: a frozen value (its mapping a
    read-only view).

    ``listeners`` holds the main listener first (``own`` None, serving the chosen target), then
    the targets with a port of their own, in file order. ``config`` is None for a proxy made
    from a URL alone (``serve --target URL``), which follows no file."""

    listeners: tuple[Listener, ...]
    config: ConfigFile | None = None
    # The name the main listener's target has in the file (pinned or ``active``).
    chosen: str | None = None
    # Target name -> why its key could not be read, for the chosen target, those on ports of
    # their own and those their routes reach.
    key_problems: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Why the file's latest edit is not applied (path:line:col lines); this plan is the last good one.
    config_error: str | None = None
    log: LogSettings = field(default_factory=LogSettings)
    # What the inspector keeps: the file's [inspector] with serve's flags on top.
    inspector: Inspection = field(default_factory=Inspection)
    # How the recording of answers is kept and replayed: the file's [cache] (each target's own
    # ``cache`` mode says whether its requests use it).
    cache: Recording = field(default_factory=Recording)

    @property
    def main(self) -> Listener:
        return self.listeners[0]


    @property
    def settings(self) -> ProxySettings:
        """The main listener's settings (own ports take them with their own port)."""
        return self.main.settings

    @property
    def target(self) -> Target:
        """The target the main listener serves."""
        return self.main.target

    @property
    def own_ports(self) -> tuple[Listener, ...]:
        return self.listeners[1:]

    @property
    def key_problem(self) -> str | None:
        """Why the chosen target's key could not be read."""
        return self.key_problems.get(self.chosen) if self.chosen is not None else None

    def own(self, name: str) -> Listener | None:
        """The listener of the target ``name`` served on a port of its own, if it is."""
        return next((listener for listener in self.own_ports if listener.own == name), None)

    def key_headers(self, name: str | None, target: Target) -> frozenset[str]:
        """The credential headers (lower-case) ``target`` gets, and those its file entry sets
        with a key that could not be read (left out of ``target``, yet still what the target is
        made for): Copy environment points an SDK at the port whose target takes its key."""
        names = {header.lower() for header, _ in target.add_headers}
        spec = self.config.targets.get(name) if self.config is not None and name is not None else None
        if spec is not None:
            names.update(header.lower() for header, _ in spec.headers)
        return frozenset(names) & CREDENTIAL_HEADERS

    def key_headers_by_target(self) -> dict[str, frozenset[str]]:
        """The credential headers each of the file's targets sets, read or not, in file order."""
        if self.config is None:
            return {}
        return {
            name: frozenset(header.lower() for header, _ in spec.headers) & CREDENTIAL_HEADERS
            for name, spec in self.config.targets.items()
        }

    def with_target(self, target: Target) -> Plan:
        """This plan with the main listener serving ``target`` alone (a target given as a URL
        has no routes: those belong to the file's targets)."""
        return replace(self, listeners=(replace(self.main, target=target, routing=None), *self.own_ports))


class KeyReader:
    """Reads targets' keys, each again only when its file entry changed or its last read failed.

    Saving the file (choose_target's own write, or a person adding an allowed host) must not run
    a key command again: it may unlock a password manager or open an SSO page. :meth:`refresh`,
    for a key the target rejected, runs the command again at most once per ``refresh_interval_s``
    across targets."""

    def __init__(
        self,
        *,
        refresh_interval_s: float = KEY_REFRESH_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._read: dict[str, tuple[TargetSpec, ResolvedTarget]] = {}
        # Not 0.0: the monotonic clock may start at boot, and an app started at login within
        # the interval of it would otherwise skip its first refresh.
        self._last_refresh = float("-inf")

    def resolve(self, spec: TargetSpec, *, retry_failed: bool = True) -> ResolvedTarget:
        """The target for ``spec``, its key read unless an unchanged entry was read before: fine,
        or (``retry_failed`` False) not, since asking again may run a failing command again."""
        known = self._read.get(spec.name)
        if (
            known is not None
            and _same_entry(known[0], spec)
            and (known[1].problem is None or not retry_failed)
        ):
            # The entry's cache mode may have changed (the tray's Cache menu writes it): no
            # reason to read the key again.
            return replace(known[1], target=replace(known[1].target, cache=spec.cache))
        resolved = resolve_target(spec)
        self._read[spec.name] = (spec, resolved)
        return resolved

    def refresh_due(self) -> bool:
        """True when a refresh now would run the command (the interval is over)."""
        return self._clock() - self._last_refresh >= self.refresh_interval_s

    def refresh(self, spec: TargetSpec) -> ResolvedTarget | None:
        """``spec``'s key read again (its command run); None when that is too soon, or when the
        key cannot change by asking again (not a command)."""
        if not key_refreshes(spec) or not self.refresh_due():
            return None
        self._last_refresh = self._clock()
        resolved = resolve_target(spec)
        self._read[spec.name] = (spec, resolved)
        return resolved


def _same_entry(old: TargetSpec, new: TargetSpec) -> bool:
    """True when ``new`` is ``old`` as written, wherever it now sits in the file and whatever it
    now claims and however its answers are recorded: its routes change where requests go, its
    cache mode what happens to them, not the target its key is read for."""
    return (
        replace(
            old,
            key_position=new.key_position,
            ca_bundle_position=new.ca_bundle_position,
            prefixes=new.prefixes,
            models=new.models,
            model_map=new.model_map,
            fallbacks=new.fallbacks,
            cache=new.cache,
        )
        == new
    )


def read_config(path: Path, overrides: Overrides, *, chosen: str | None = None) -> ConfigFile:
    """The file at ``path``, checked for what the running proxy needs: raise ConfigError when it
    cannot be used (with path:line:col), KeyError when the chosen target is not in it.

    ``chosen`` (default: the file's ``active``) is the target the main
    listener is to serve. Its TLS settings and those of targets on ports of their own, and of
    every target their routes reach, are loaded here, before they reach the engine, which would
    fail building them (config/cabundle.py)."""
    config = load_config(path)
    name = chosen or config.active
    if name not in config.targets:
        raise KeyError(name, tuple(config.targets))  # the names, for the message: no second read
    reached = [
        *routed_targets(config, name),
        *(other for own in config.target_ports() for other in routed_targets(config, own, own_port=True)),
    ]
    unusable = ca_bundle_error(path, config, overrides, [name, *config.target_ports(), *reached])
    if unusable is not None:
        raise unusable
    return config


def ca_bundle_error(
    path: Path, config: ConfigFile, overrides: Overrides, names: Iterable[str]
) -> ConfigError | None:
    """The error for the targets ``names`` (as the command line adjusts them) whose CA bundle
    TLS cannot load, at its line in the file; None when all can be used."""
    problems = []
    for name in dict.fromkeys(names):
        spec = config.targets[name]
        # The key is not read: a key command must not run for a check.
        tls = overrides.target(Target(url=spec.url, verify_tls=spec.verify_tls, ca_bundle=spec.ca_bundle))
        problem = target_ca_bundle_problem(tls)
        if problem:
            problems.append(Problem(*spec.ca_bundle_position, problem))
    return ConfigError(str(path), problems) if problems else None


def tend_files(path: Path, config: ConfigFile) -> list[str]:
    """The writes the file calls for, taken on purpose rather than while reading it: a file
    holding a key itself is made owner-only, and the local access token is made when the file
    requires one and there is none yet. Returns what is worth a warning."""
    notices = []
    notice = protect_in_file_keys(path, config)
    if notice:
        notices.append(notice)
    if config.settings.require_token:
        where = token_path(path)
        try:
            load_token(where)
        except (OSError, LocalTokenError):
            pass  # there but unusable: listener_settings reads it, finds the same and says why
        else:
            try:
                ensure_token(where)  # made if missing, narrowed if others may read it
            except (OSError, LocalTokenError) as exc:
                # listener_settings then finds no token, and the proxy refuses every request.
                log.error(
                    "require_token is on but the local access token in %s cannot be used: %s",
                    where,
                    _reason(exc),
                )
    return notices


def listener_settings(config: ConfigFile, path: Path) -> ProxySettings:
    """The listener settings of ``config`` (the file at ``path``), with the local access token
    to ask for when they require one, as the token file holds it: read, never made (that is
    :func:`tend_files`'s step). Without a usable token file the settings carry none and the
    proxy refuses every request rather than let any program in; the log says why."""
    settings = config.settings
    if not settings.require_token:
        return replace(settings, local_token=None)
    where = token_path(path)
    try:
        token = load_token(where)
    except (OSError, LocalTokenError) as exc:
        log.error(
            "require_token is on but the local access token in %s cannot be used: %s", where, _reason(exc)
        )
        return replace(settings, local_token=None)
    if token is None:  # tend_files could not make it, and said why
        return replace(settings, local_token=None)
    return replace(settings, local_token=Secret(token))


def _reason(exc: OSError | LocalTokenError) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def routed_targets(config: ConfigFile, name: str, *, own_port: bool = False) -> tuple[str, ...]:
    """The targets other than ``name`` that requests on a port serving ``name`` can reach, in
    file order. On the main port (``name`` chosen there): each target claiming a prefix or
    models, and the fallbacks of those and of ``name``. On ``name``'s own port (``own_port``):
    its fallbacks. Only the routed target's own fallbacks are tried, so a fallback's fallbacks
    are not followed."""
    targets = config.targets
    routed = [] if own_port else [other for other, spec in targets.items() if spec.routes]
    reached = {*routed}
    for routed_name in (name, *routed):
        reached.update(targets[routed_name].fallbacks)
    reached.discard(name)
    return tuple(other for other in targets if other in reached)


def plan_for(
    config: ConfigFile,
    path: Path,
    overrides: Overrides,
    keys: KeyReader,
    *,
    chosen: str | None = None,
    retry_keys: Collection[str] | None = None,
) -> Plan:
    """The plan for a file read by :func:`read_config` (after :func:`tend_files`).

    A key that could not be read last time is read again for the targets named in
    ``retry_keys`` (None: every target, as for an edit of the file, which may be the fix); the
    others keep what reading them last gave, so a failing key command does not run again.
    Keys are read only for targets some port serves or routes to, each once per plan."""
    name = chosen or config.active
    settings = overrides.settings(listener_settings(config, path))
    problems: dict[str, str] = {}
    made: dict[str, Target] = {}

    def target(spec_name: str) -> Target:
        if spec_name not in made:
            retry = retry_keys is None or spec_name in retry_keys
            resolved = keys.resolve(config.targets[spec_name], retry_failed=retry)
            if resolved.problem:
                problems[spec_name] = resolved.problem
            made[spec_name] = overrides.target(resolved.target, chosen=spec_name == name)
        return made[spec_name]

    main = Listener(settings, target(name), routing=_main_routing(config, name, target))
    own = tuple(
        Listener(
            replace(settings, port=port),
            target(own_name),
            own=own_name,
            routing=_own_routing(config, own_name, target),
        )
        for own_name, port in config.target_ports().items()
    )
    return Plan(
        listeners=(main, *own),
        config=config,
        chosen=name,
        key_problems=MappingProxyType(problems),
        log=config.log,
        inspector=overrides.inspection(config.inspector),
        cache=config.cache,
    )


def _main_routing(config: ConfigFile, chosen: str, target: Callable[[str], Target]) -> Routing | None:
    """The main port's routes: every target's claims, ``chosen`` the default; None (every
    request to ``chosen``, as before routes existed) when no target claims a prefix or models
    and ``chosen`` has neither fallbacks nor a model_map."""
    targets = config.targets
    own = targets[chosen]
    if not (own.fallbacks or own.model_map or any(spec.routes for spec in targets.values())):
        return None
    table = RouteTable.build([spec.claims() for spec in targets.values()], default=chosen)
    return _routing(config, table, routed_targets(config, chosen), target)


def _own_routing(config: ConfigFile, name: str, target: Callable[[str], Target]) -> Routing | None:
    """A target's own port serves only that target, yet with its model_map and its fallbacks
    (each with its own model_map); None when it has neither."""
    spec = config.targets[name]
    if not (spec.fallbacks or spec.model_map):
        return None
    claims = [
        TargetClaims(name, model_map=spec.model_map, fallbacks=spec.fallbacks),
        *(TargetClaims(other, model_map=config.targets[other].model_map) for other in spec.fallbacks),
    ]
    table = RouteTable.build(claims, default=name)
    return _routing(config, table, routed_targets(config, name, own_port=True), target)


def _routing(
    config: ConfigFile, table: RouteTable, reached: Iterable[str], target: Callable[[str], Target]
) -> Routing:
    """``table`` with the ``reached`` targets, keys read, and the file's failover waits."""
    return Routing(
        table=table,
        targets=tuple(target(name) for name in reached),
        retry_after_max_s=config.failover.retry_after_max_s,
        cooldown_s=config.failover.cooldown_s,
    )


def follow(
    path: Path,
    overrides: Overrides,
    keys: KeyReader,
    last_good: Plan,
    *,
    chosen: str | None = None,
) -> tuple[Plan, list[str]]:
    """The plan for the file as it is now, and the warnings its reading gave; when it cannot be
    used, ``last_good`` with the reason as its ``config_error``."""
    try:
        config = read_config(path, overrides, chosen=chosen)
    except ConfigError as exc:
        return replace(last_good, config_error=str(exc)), []
    except KeyError as exc:
        message = f"{path}: target '{exc.args[0]}' is no longer in the file"
        return replace(last_good, config_error=message), []
    notices = tend_files(path, config)
    return plan_for(config, path, overrides, keys, chosen=chosen), notices
