"""TOML text -> configuration model, with errors that say file, line, column and a fix.

The file (``config.toml`` in the user's config directory), in short::

    active = "openai"               # the target new requests go to

    [listen]
    port = 8000

    [targets.openai]
    url = "https://api.openai.com"  # may carry a base path
    key = { env = "OPENAI_API_KEY" }
    headers = { Authorization = "Bearer {key}" }

Every setting of each table, with its type, default and effect, is declared in ``options.py``,
which this parser reads its keys, types and defaults from; the README shows them all.

Key sources: ``{ env = "NAME" }`` an environment variable; ``{ keyring = true }`` the OS
keychain, entry "TrayProxy" / the target's name (``{ keyring = "account" }`` names another);
``{ command = "..." }`` a shell command whose first output line is the key, re-run when the
target answers 401; a plain string, the key itself (discouraged: the file is kept owner-only).

When a target's ``headers`` set a credential header (Authorization, x-api-key, api-key,
x-goog-api-key), the tool's own other credential headers are removed before forwarding;
``keep_headers = ["authorization"]`` lets the named ones through.

Parsing never raises anything but :class:`ConfigError`, which carries every problem found
(not only the first), each as ``path:line:col: message``. Key sources are checked for shape
here; reading them is ``keys.py``'s job.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from desktop.config import options
from desktop.config.checks import Checker, ConfigError, Problem, nesting_problem
from desktop.config.claims import check_claims, read_claims
from desktop.config.model import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_ALLOWED_ORIGINS,
    Failover,
    Inspection,
    LogSettings,
    ProxySettings,
    Recording,
    header_problem,
    host_problem,
    url_port_problem,
)
from desktop.redaction import CREDENTIAL_HEADERS, redact_text
from desktop.routing import TargetClaims

__all__ = ["ConfigError", "ConfigFile", "Problem", "TargetSpec", "parse_config"]

# The keys each table knows, in the order hints list them: the settings declared in options.py.
TOP_KEYS = tuple(option.key for option in options.TOP_SETTINGS) + options.TABLES
LISTEN_KEYS = tuple(option.key for option in options.LISTEN_SETTINGS)
LOG_KEYS = tuple(option.key for option in options.LOG_SETTINGS)
SECURITY_KEYS = tuple(option.key for option in options.SECURITY_SETTINGS)
TARGET_KEYS = tuple(option.key for option in options.TARGET_SETTINGS)
KEY_SOURCES = ("env", "keyring", "command", "value")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target as written in the file; its key is not read yet."""

    name: str
    url: str
    key_source: tuple[str, str | bool] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    strip_headers: frozenset[str] = frozenset()
    # Credential headers (lower-case) the tool's requests keep beside the target's own.
    keep_headers: frozenset[str] = frozenset()
    connect_timeout_s: float = options.CONNECT_TIMEOUT.default
    read_timeout_s: float = options.READ_TIMEOUT.default
    verify_tls: bool = options.VERIFY_TLS.default
    ca_bundle: str | None = options.CA_BUNDLE.default
    keep_host: bool = options.KEEP_HOST.default
    # Outgoing proxy URL; "" connects directly; None follows HTTPS_PROXY / NO_PROXY.
    proxy: str | None = options.TARGET_PROXY.default
    # Where ``key`` is written (line, column), for messages about reading it.
    key_position: tuple[int, int] = (1, 1)
    # Where ``ca_bundle`` is written, for messages about loading the file it names.
    ca_bundle_position: tuple[int, int] = (1, 1)
    # A port of its own this target is also served on (same listen hosts), None: only when active.
    port: int | None = options.TARGET_PORT.default
    # Its routes on the main port (desktop/routing.py: TargetClaims says what each is).
    prefixes: tuple[str, ...] = options.PREFIX.default
    models: tuple[str, ...] = options.MODELS.default
    model_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fallbacks: tuple[str, ...] = options.FALLBACKS.default
    # Whether its answers are recorded, replayed or answered offline (engine/recall.py).
    cache: str = options.CACHE_MODE.default

    def claims(self) -> TargetClaims:
        """What this target claims, as the route table takes it."""
        return TargetClaims(self.name, self.prefixes, self.models, self.model_map, self.fallbacks)

    @property
    def routes(self) -> bool:
        """True when it claims a prefix or models: requests on the main port reach it by them."""
        return bool(self.prefixes or self.models)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed, valid configuration file."""

    active: str
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    settings: ProxySettings = field(default_factory=ProxySettings)
    log: LogSettings = field(default_factory=LogSettings)
    failover: Failover = field(default_factory=Failover)
    inspector: Inspection = field(default_factory=Inspection)
    cache: Recording = field(default_factory=Recording)

    def target_ports(self) -> dict[str, int]:
        """Target name -> the port of its own, for the targets that have one, in file order."""
        return {name: spec.port for name, spec in self.targets.items() if spec.port is not None}


def _check_target(check: Checker, name: str, table: Any) -> TargetSpec | None:
    path = ("targets", name)
    if not isinstance(table, dict):
        check.problem(path, f"'targets.{name}' must be a table ([targets.{name}])")
        return None
    given = check.settings(table, options.TARGET_SETTINGS, path)
    url = given["url"]
    if url is None:
        if "url" not in table:
            check.problem(path, f"target '{name}' has no url")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Masked: the file's errors reach the tray's status line, which no log handler redacts.
        check.problem((*path, "url"), f"'{redact_text(url)}' is not an http:// or https:// URL with a host")
    elif parts.query or parts.fragment or parts.username:
        check.problem((*path, "url"), "a target URL may carry a path but no query, fragment or credentials")
    elif port_problem := url_port_problem(url):
        check.problem((*path, "url"), f"'{redact_text(url)}' {port_problem}")
    headers: list[tuple[str, str]] = []
    for header, value in (given["headers"] or {}).items():
        if not isinstance(value, str):
            check.problem((*path, "headers"), f"header '{header}' of target '{name}' must be a string")
        elif problem := header_problem(header, value):
            check.problem((*path, "headers"), f"'targets.{name}.headers' cannot be sent: {problem}")
        else:
            headers.append((header, value))
    key_source = _check_key(check, table.get("key"), path) if "key" in table else None
    uses_key = any("{key}" in value for _, value in headers)
    if uses_key and key_source is None:
        check.problem(
            (*path, "headers"),
            f"target '{name}' uses {{key}} in a header but has no key source (add key = {{ env = \"NAME\" }})",
        )
    strip_headers = frozenset(h.lower() for h in given["strip_headers"])
    claims = read_claims(check, name, table)
    return TargetSpec(
        name=name,
        url=url,
        key_source=key_source,
        headers=tuple(headers),
        strip_headers=strip_headers,
        keep_headers=_check_keep_headers(check, given["keep_headers"], path, headers, strip_headers),
        connect_timeout_s=float(given[options.CONNECT_TIMEOUT.key]),
        read_timeout_s=float(given[options.READ_TIMEOUT.key]),
        verify_tls=given["verify_tls"],
        ca_bundle=given["ca_bundle"],
        keep_host=given["keep_host"],
        proxy=_check_proxy(check, table, path),
        key_position=check.locate.find(*path, "key"),
        ca_bundle_position=check.locate.find(*path, "ca_bundle"),
        port=_check_target_port(check, given["port"], path),
        prefixes=claims.prefixes,
        models=claims.models,
        model_map=claims.model_map,
        fallbacks=claims.fallbacks,
        cache=check.choice((*path, options.CACHE_MODE.key), options.CACHE_MODE, given[options.CACHE_MODE.key], "cache mode"),
    )


def _check_keep_headers(
    check: Checker,
    written_headers: tuple[str, ...],
    path: tuple[str, ...],
    headers: list[tuple[str, str]],
    strip_headers: frozenset[str],
) -> frozenset[str]:
    """``keep_headers``: credential header names only, none the target sets or strips itself."""
    where = (*path, "keep_headers")
    known = sorted(CREDENTIAL_HEADERS)
    sets = {header.lower() for header, _ in headers}
    kept: set[str] = set()
    for written in written_headers:
        header = written.lower()
        if header not in CREDENTIAL_HEADERS:
            close = difflib.get_close_matches(header, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"one of {', '.join(known)}"
            check.problem(
                where,
                f"keep_headers: '{written}' is not a credential header ({hint}); other headers pass anyway",
            )
        elif header in sets:
            check.problem(where, f"keep_headers: target '{path[-1]}' sets '{written}' itself, so a tool's cannot be kept")
        elif header in strip_headers:
            check.problem(where, f"keep_headers: '{written}' is in strip_headers too; keep it in one of them")
        else:
            kept.add(header)
    return frozenset(kept)


def _check_target_port(check: Checker, port: int | None, path: tuple[str, ...]) -> int | None:
    if port is not None and not 1 <= port <= 65535:
        check.problem((*path, "port"), f"port {port} is not between 1 and 65535")
        return None
    return port


def _check_ports_differ(check: Checker, main_port: int, targets: dict[str, TargetSpec]) -> None:
    """Each target's own port differs from the main port and from every other target's."""
    taken: dict[int, str] = {}
    for name, spec in targets.items():
        if spec.port is None:
            continue
        where = ("targets", name, "port")
        if spec.port == main_port:
            check.problem(where, f"port {spec.port} of target '{name}' is the main port ([listen] port); pick another")
        elif spec.port in taken:
            check.problem(where, f"port {spec.port} of target '{name}' is already the port of target '{taken[spec.port]}'")
        else:
            taken[spec.port] = name


def _check_log(check: Checker, data: dict[str, Any]) -> LogSettings:
    given = check.settings(check.typed(data, options.LOG, dict, (), {}), options.LOG_SETTINGS, (options.LOG,))
    level = check.choice((options.LOG, options.LEVEL.key), options.LEVEL, given[options.LEVEL.key], "log level")
    return LogSettings(level=level, access=given["access"])


def _check_recording(check: Checker, data: dict[str, Any]) -> Recording:
    """The ``[cache]`` table: how big the recording of answers may grow, how it is replayed."""
    path = (options.CACHE,)
    given = check.settings(check.typed(data, options.CACHE, dict, (), {}), options.CACHE_SETTINGS, path)
    return Recording(
        max_mib=given[options.CACHE_SIZE.key],
        pace=check.choice((*path, options.CACHE_PACE.key), options.CACHE_PACE, given[options.CACHE_PACE.key], "cache pace"),
    )


def _check_proxy(check: Checker, table: dict[str, Any], path: tuple[str, ...]) -> str | None:
    """``proxy = "http://host:port"`` or ``proxy = false`` (direct); None when absent."""
    if "proxy" not in table:
        return None
    value = table["proxy"]
    where = (*path, "proxy")
    if value is False:
        return ""
    if not isinstance(value, str):
        check.problem(where, 'proxy must be a URL such as "http://proxy.example:3128", or false')
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        check.problem(where, f"proxy '{redact_userinfo(value)}' is not an http:// or https:// URL with a host")
        return None
    port_problem = url_port_problem(value)
    if port_problem:
        check.problem(where, f"proxy '{redact_userinfo(value)}' {port_problem}")
        return None
    return value


def redact_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _check_key(check: Checker, value: Any, path: tuple[str, ...]) -> tuple[str, str | bool] | None:
    where = (*path, "key")
    if isinstance(value, str):
        # A key written in the file itself: allowed, discouraged (the file is then kept
        # owner-only: keys.protect_in_file_keys).
        return ("value", value)
    if not isinstance(value, dict) or len(value) != 1:
        check.problem(where, 'key must be one of { env = "NAME" }, { keyring = true }, { command = "..." }')
        return None
    [(kind, spec)] = value.items()
    if kind not in KEY_SOURCES:
        close = difflib.get_close_matches(kind, KEY_SOURCES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        check.problem(where, f"unknown key source '{kind}'{hint}")
        return None
    if kind == "keyring" and not (spec is True or (isinstance(spec, str) and spec)):
        check.problem(where, 'keyring must be true (the entry named after the target) or an entry name')
        return None
    if kind in ("env", "command", "value") and (not isinstance(spec, str) or not spec):
        check.problem(where, f"key {kind} must be a non-empty string")
        return None
    return (kind, spec)


def parse_config(text: str, *, path: str = "config.toml") -> ConfigFile:
    """Parse and check ``text``; raise ConfigError listing every problem."""
    too_deep = nesting_problem(text)
    if too_deep is not None:
        raise ConfigError(path, [too_deep])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line, col = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
        reason = _TOML_POSITION.sub("", message).strip()
        raise ConfigError(path, [Problem(line, col, f"not valid TOML: {reason}")]) from None
    except RecursionError:
        # What nesting_problem's scan did not catch; tomllib says nothing of where.
        raise ConfigError(path, [Problem(1, 1, "the file nests too deeply for a TOML reader")]) from None
    check = Checker(text)
    top = check.settings(data, options.TOP_SETTINGS, (), tables=options.TABLES)
    listen = check.settings(check.typed(data, options.LISTEN, dict, (), {}), options.LISTEN_SETTINGS, (options.LISTEN,))
    hosts = listen["hosts"] or options.HOSTS.default
    for host in hosts:
        if problem := host_problem(host):
            check.problem(("listen", "hosts"), f"'listen.hosts' holds {host!r}, which {problem}")
            hosts = options.HOSTS.default
            break
    port = listen["port"]
    if not 0 <= port <= 65535:
        check.problem(("listen", "port"), f"port {port} is not between 0 and 65535")
        port = options.PORT.default
    security = check.settings(
        check.typed(data, options.SECURITY, dict, (), {}), options.SECURITY_SETTINGS, (options.SECURITY,)
    )
    settings = ProxySettings(
        hosts=hosts,
        port=port,
        allowed_hosts=DEFAULT_ALLOWED_HOSTS + security["allowed_hosts"],
        allowed_origins=DEFAULT_ALLOWED_ORIGINS + security["allowed_origins"],
        require_token=security["require_token"],
    )
    targets: dict[str, TargetSpec] = {}
    default_proxy = _check_proxy(check, data, ())
    written = check.typed(data, options.TARGETS, dict, (), {})
    for name, table in written.items():
        spec = _check_target(check, name, table)
        if spec is not None:
            if spec.proxy is None and default_proxy is not None:
                spec = replace(spec, proxy=default_proxy)
            targets[name] = spec
    if not data.get("targets"):
        check.problem(("targets",), "no targets: add at least one [targets.NAME] table with a url")
    _check_ports_differ(check, port, targets)
    # A target with a problem of its own still counts as one to fall back to: its problem is
    # said where it is, not again as "not a target" wherever it is named.
    check_claims(check, [targets[name].claims() if name in targets else TargetClaims(name) for name in written])
    failover = check.settings(
        check.typed(data, options.FAILOVER, dict, (), {}), options.FAILOVER_SETTINGS, (options.FAILOVER,)
    )
    inspector = check.settings(
        check.typed(data, options.INSPECTOR, dict, (), {}), options.INSPECTOR_SETTINGS, (options.INSPECTOR,)
    )
    log_settings = _check_log(check, data)
    recording = _check_recording(check, data)
    active = top["active"]
    if not active and targets:
        active = next(iter(targets))
    elif active and active not in data.get("targets", {}):
        close = difflib.get_close_matches(active, list(data.get("targets", {})), n=1)
        hint = (
            f" (did you mean '{close[0]}'?)" if close else f" (targets: {', '.join(data.get('targets', {}))})"
        )
        check.problem(("active",), f"active target '{active}' does not exist{hint}")
    if check.problems:
        check.problems.sort(key=lambda p: (p.line, p.col))
        raise ConfigError(path, check.problems)
    return ConfigFile(
        active=active,
        targets=targets,
        settings=settings,
        log=log_settings,
        failover=Failover(
            retry_after_max_s=float(failover[options.RETRY_AFTER_MAX.key]),
            cooldown_s=float(failover[options.COOLDOWN.key]),
        ),
        inspector=Inspection(
            enabled=inspector[options.INSPECT.key],
            keep_bodies=inspector[options.INSPECT_BODIES.key],
            body_cap_mib=inspector[options.BODY_CAP.key],
            max_rows=inspector[options.MAX_ROWS.key],
        ),
        cache=recording,
    )
