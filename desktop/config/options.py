"""Every setting, declared once: where it is written, its type, its default, what it does, its flag.

The one list mitmproxy's ``options.py`` keeps, as plain values read by everything that needs
a setting: the model (``model.py``) takes its defaults from here, the parser (``parse.py``) the
keys it knows with their types and defaults, ``trayproxy serve`` its flags' names and help, and
the tests hold the README's example and the first-run file to it. A setting added here alone
is accepted by the parser with its type checked, and the README check names it until the
example shows it. What a number must be beyond its type is declared with it as its
``check`` (a timeout finite and above 0), which the parser, ``serve``'s flags and the model's
own checks apply; what a listen host, a header or a URL's port must be, ``model.py`` says.
What a setting does is the engine's.

Row 1: imports nothing of ours and does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "ACCESS",
    "ACTIVE",
    "ALLOWED_HOSTS",
    "ALLOWED_ORIGINS",
    "BODY_CAP",
    "CACHE_MODE",
    "CACHE_PACE",
    "CACHE_SETTINGS",
    "CACHE_SIZE",
    "CA_BUNDLE",
    "CLAIM_SETTINGS",
    "CONNECT_TIMEOUT",
    "COOLDOWN",
    "FAILOVER_SETTINGS",
    "FAILURES_FOR_COOLDOWN",
    "FALLBACKS",
    "FILE_SETTINGS",
    "HEADERS",
    "HOSTS",
    "INSPECT",
    "INSPECTOR_SETTINGS",
    "INSPECT_BODIES",
    "KEEP_HEADERS",
    "KEEP_HOST",
    "KEY",
    "LEVEL",
    "LISTEN_SETTINGS",
    "LOG_SETTINGS",
    "MAX_COOLDOWN_S",
    "MAX_RETRY_AFTER_S",
    "MAX_ROWS",
    "MAX_STOP_GRACE_S",
    "MODELS",
    "MODEL_MAP",
    "PORT",
    "PREFIX",
    "PROXY",
    "READ_TIMEOUT",
    "REQUIRE_TOKEN",
    "RETRY_AFTER_MAX",
    "SECURITY_SETTINGS",
    "STOP_GRACE",
    "STRIP_HEADERS",
    "TABLES",
    "TARGET_PORT",
    "TARGET_PROXY",
    "TARGET_SETTINGS",
    "TOP_SETTINGS",
    "URL",
    "VERIFY_TLS",
    "Option",
]

T = TypeVar("T")

# Where a setting is written: the top of the file, one of its tables, or each [targets.NAME].
TOP = ""
LISTEN = "listen"
SECURITY = "security"
LOG = "log"
FAILOVER = "failover"
INSPECTOR = "inspector"
CACHE = "cache"
TARGETS = "targets"
TARGET = "targets.NAME"
# The tables at the top of the file, in the order a hint lists them.
TABLES: tuple[str, ...] = (LISTEN, SECURITY, LOG, FAILOVER, INSPECTOR, CACHE, TARGETS)
# The TOML types a number setting accepts: `connect_timeout = 10` is as good as 10.0.
NUMBER: tuple[type, ...] = (int, float)


@dataclass(frozen=True, slots=True)
class Option(Generic[T]):
    """One setting. ``table`` None: no place in the file, only a ``trayproxy serve`` flag.

    ``types`` are the TOML types the file may give (``list`` always means a list of strings);
    ``default`` is the value when the file leaves the setting out; ``help`` says what it does,
    and :meth:`describe` adds the default. ``flags`` override it for ``trayproxy serve``; the
    flag's help is ``help`` with the default it falls back to, or ``flag_help`` when the flag
    says something else (a switch turning it off, a value added to the file's list), where
    ``{default}`` stands for that default.
    """

    table: str | None
    key: str
    types: tuple[type, ...]
    default: T
    help: str
    # How the default reads when its value does not say it (None, "").
    default_text: str = ""
    # The only values allowed, for a setting that is one word of a few.
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    flag_help: str = ""
    # What a value of the right type must be besides: a function giving None for a usable value,
    # else what is wrong, worded to follow the setting's name ("must be more than 0 seconds").
    check: Callable[[T], str | None] | None = None

    def problem(self, value: T) -> str | None:
        """What is wrong with ``value`` (of one of ``types``) beyond its type; None when usable."""
        return None if self.check is None else self.check(value)

    @property
    def path(self) -> str:
        """Where it is written, as error messages name it: ``targets.NAME.connect_timeout``."""
        return f"{self.table}.{self.key}" if self.table else self.key

    @property
    def shown_default(self) -> str:
        """The default as a person reads it: ``10``, ``true``, ``"info"``."""
        if self.default_text:
            return self.default_text
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        if isinstance(self.default, str):
            return f'"{self.default}"'
        if isinstance(self.default, tuple):
            return " and ".join(map(str, self.default)) if self.default else "none"
        return str(self.default)

    def describe(self) -> str:
        """One sentence: what it does and its default."""
        return f"{self.help} (default: {self.shown_default})"

    def flag_text(self) -> str:
        """The help of its ``trayproxy serve`` flag: ``flag_help``, else ``help``, with
        ``{default}`` replaced by what the flag falls back to (the config file's value, if any)."""
        text = self.flag_help or f"{self.help} (default: {{default}})"
        fallback = self.shown_default if self.table is None else f"the config file's {self.key}, else {self.shown_default}"
        return text.replace("{default}", fallback)


# What numbers must be, beyond their types: each check names what it refuses and what to write.

# The longest stop grace: the controller waits for a stop on a thread, and the OS bounds such
# waits (Python's threading.TIMEOUT_MAX is about 49 days on Windows; --stop-grace 1e10 already
# overflowed time_t at stop on Linux). A day is far past any request worth waiting for.
MAX_STOP_GRACE_S = 86400.0


def _timeout_check(value: float) -> str | None:
    """aiohttp rounds a timeout up with math.ceil, which nan and inf break: with one, every
    request failed with 500."""
    if math.isfinite(value) and value > 0:
        return None
    return f"must be a number of seconds more than 0, such as 10 or 0.5, not {value:g}"


def _seconds_up_to(most: float) -> Callable[[float], str | None]:
    """A check for a number of seconds from 0 to ``most`` (nan and inf are neither)."""

    def check(value: float) -> str | None:
        if math.isfinite(value) and 0 <= value <= most:
            return None
        return f"must be a number of seconds from 0 to {most:g}, not {value:g}"

    return check


_stop_grace_check = _seconds_up_to(MAX_STOP_GRACE_S)


def _whole_number_in(least: int, most: int, unit: str) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if least <= value <= most else f"must be from {least} to {most}{unit} (it is {value})"

    return check
# The longest Retry-After worth waiting out for the same target: the tool waits that long
# before a byte, with fallbacks standing by. A minute is past any rate limiter's short pause.
MAX_RETRY_AFTER_S = 60.0
# The longest cool-down: a day, as for the stop grace (a target put aside for longer is one to
# take out of the file).
MAX_COOLDOWN_S = 86400.0
# A target failing this many times in a row (before any byte reached the tool) is tried last
# for [failover] cooldown seconds, so requests stop waiting on it first. Not a setting: three
# tells a target that is down from one unlucky request, and nobody asked to tune it.
FAILURES_FOR_COOLDOWN = 3


# The top of the file.
ACTIVE: Option[str] = Option(
    TOP,
    "active",
    (str,),
    "",
    "the target new requests go to: the NAME of one [targets.NAME] table",
    default_text="the first target",
)
PROXY: Option[str | None] = Option(
    TOP,
    "proxy",
    (str, bool),
    None,
    'the outgoing proxy for every target, an http:// or https:// URL, or false to connect directly',
    default_text="HTTPS_PROXY, HTTP_PROXY and NO_PROXY from the environment",
)

# [listen]
HOSTS: Option[tuple[str, ...]] = Option(
    LISTEN,
    "hosts",
    (list,),
    # Both loopback families: many clients resolve "localhost" to ::1 first, and a proxy that
    # only listens on 127.0.0.1 then costs them a failed connect (or fails outright) on every request.
    ("127.0.0.1", "::1"),
    "the addresses to listen on; any but loopback lets other machines spend your keys",
    flags=("--host",),
    flag_help="address to listen on; repeat for several (default: {default})",
)
PORT: Option[int] = Option(
    LISTEN,
    "port",
    (int,),
    8000,
    "the main port, which serves the active target; 0 picks a free one",
    flags=("--port",),
)

# [security]
ALLOWED_HOSTS: Option[tuple[str, ...]] = Option(
    SECURITY,
    "allowed_hosts",
    (list,),
    (),
    "Host header names accepted besides 127.0.0.1, localhost and [::1] (DNS-rebinding defence)",
    flags=("--allow-host",),
    flag_help="also accept requests whose Host is NAME (default: only this machine's names)",
)
ALLOWED_ORIGINS: Option[tuple[str, ...]] = Option(
    SECURITY,
    "allowed_origins",
    (list,),
    (),
    "web-page origins allowed besides pages served from this machine and editor webviews",
    flags=("--allow-origin",),
    flag_help="also accept requests from web pages of ORIGIN, e.g. https://app.example",
)
REQUIRE_TOKEN: Option[bool] = Option(
    SECURITY,
    "require_token",
    (bool,),
    False,
    "tools must send TrayProxy's local access token (trayproxy config token) as their API key",
)

# [log]
LEVEL: Option[str] = Option(
    LOG,
    "level",
    (str,),
    "info",
    "what TrayProxy's own messages show; debug also shows aiohttp's detail",
    # Loudest first; a person picks one.
    choices=("debug", "info", "warning", "error"),
    flags=("-v", "--verbose"),
    flag_help="log debugging detail",
)
ACCESS: Option[bool] = Option(
    LOG,
    "access",
    (bool,),
    True,
    "one line per request: method, path, target, status, bytes, time to first byte, duration",
    flags=("-q", "--quiet"),
    flag_help="do not log one line per request",
)

# [targets.NAME]
URL: Option[str | None] = Option(
    TARGET,
    "url",
    (str,),
    None,
    "where the target's requests go; a path in it is put before every request's path",
    default_text="none: every target needs one",
)
# No default value: a target without a key adds none (the parser reads a key source's shape).
KEY: Option[None] = Option(
    TARGET,
    "key",
    (str, dict),
    None,
    'where the target\'s key comes from: { env = "NAME" }, { keyring = true }, { command = "..." } or the key itself',
    default_text="no key: a tool's own passes",
)
HEADERS: Option[None] = Option(
    TARGET,
    "headers",
    (dict,),
    None,
    "headers added to every request, replacing a tool's of the same name; {key} is the key",
    default_text="none",
    flags=("--header",),
    flag_help="add or replace a header on every upstream request (one carrying a key only on those to the"
    " chosen target, never to routes' and fallbacks' other targets); repeatable; {env:NAME} reads a variable",
)
STRIP_HEADERS: Option[tuple[str, ...]] = Option(
    TARGET,
    "strip_headers",
    (list,),
    (),
    "headers removed from a tool's requests before they go out",
)
KEEP_HEADERS: Option[tuple[str, ...]] = Option(
    TARGET,
    "keep_headers",
    (list,),
    (),
    "a tool's credential headers that still go beside the key the target's headers add",
)
# Timeouts for slow reasoning models: minutes may pass before the first token or between two.
CONNECT_TIMEOUT: Option[float] = Option(
    TARGET,
    "connect_timeout",
    NUMBER,
    10.0,
    "seconds allowed to connect to the target, TLS included",
    flags=("--connect-timeout",),
    check=_timeout_check,
)
READ_TIMEOUT: Option[float] = Option(
    TARGET,
    "read_timeout",
    NUMBER,
    600.0,
    "seconds allowed until the response headers arrive, and between two chunks of a response",
    flags=("--upstream-timeout",),
    check=_timeout_check,
)
VERIFY_TLS: Option[bool] = Option(
    TARGET,
    "verify_tls",
    (bool,),
    True,
    "check the target's certificate (against the system's CAs, or ca_bundle's); false never with a real key",
    flags=("--insecure",),
    flag_help="do not verify the target's TLS certificate",
)
CA_BUNDLE: Option[str | None] = Option(
    TARGET,
    "ca_bundle",
    (str,),
    None,
    "a PEM file of the CAs to trust for this target instead of the system's",
    default_text="the system's",
    flags=("--ca-bundle",),
    flag_help="trust the CAs in FILE instead of the system's",
)
KEEP_HOST: Option[bool] = Option(
    TARGET,
    "keep_host",
    (bool,),
    False,
    "send the tool's Host header instead of the target's (for virtual-hosted gateways)",
    flags=("--keep-host",),
    flag_help="send the client's Host header instead of the target's",
)
TARGET_PROXY: Option[str | None] = Option(
    TARGET,
    "proxy",
    (str, bool),
    None,
    "this target's outgoing proxy, an http:// or https:// URL, or false to connect directly",
    default_text="the top-level proxy",
)
# Routes on the main port (issue 14); desktop/routing.py holds what each must be.
PREFIX: Option[tuple[str, ...]] = Option(
    TARGET,
    "prefix",
    (str, list),
    (),
    'a path on the main port that leads to this target, cut off on the way: "/anthropic" sends'
    " /anthropic/v1/messages as /v1/messages; a list claims several",
)
MODELS: Option[tuple[str, ...]] = Option(
    TARGET,
    "models",
    (list,),
    (),
    'the models this target serves on the main port, as globs: ["claude-*"], ["gpt-*", "o[0-9]*"]',
)
# No default value: a table of names (the parser checks each).
MODEL_MAP: Option[None] = Option(
    TARGET,
    "model_map",
    (dict,),
    None,
    'model names this target knows by another: { "claude-sonnet-4-5" = "anthropic/claude-sonnet-4.5" }',
    default_text="none: names are sent as the tool wrote them",
)
FALLBACKS: Option[tuple[str, ...]] = Option(
    TARGET,
    "fallbacks",
    (list,),
    (),
    "targets tried in order when this one fails before any byte has reached the tool",
)
# The recording of answers (issue 16): desktop/engine/recall.py says what each mode does.
CACHE_MODE: Option[str] = Option(
    TARGET,
    "cache",
    (str,),
    "off",
    "answers recorded on disk for this target: off; record (every request goes out, answers are"
    " kept); replay (repeats answered from the recording, the rest sent and kept); offline (only"
    " from the recording, the rest get 504 cache_offline_miss)",
    choices=("off", "record", "replay", "offline"),
    flags=("--cache",),
    flag_help="answer from recorded answers for the target served: off, record, replay or offline"
    " (default: {default})",
)
TARGET_PORT: Option[int | None] = Option(
    TARGET,
    "port",
    (int,),
    None,
    "a port of its own this target is also served on, whatever `active` says",
    default_text="none: served on the main port while active",
)

# [failover]
RETRY_AFTER_MAX: Option[float] = Option(
    FAILOVER,
    "retry_after_max",
    NUMBER,
    2.0,
    "seconds: a 429 whose Retry-After is at most this is asked again once after that wait;"
    " a longer one goes to the next fallback at once",
    check=_seconds_up_to(MAX_RETRY_AFTER_S),
)
COOLDOWN: Option[float] = Option(
    FAILOVER,
    "cooldown",
    NUMBER,
    30.0,
    f"seconds a target that failed {FAILURES_FOR_COOLDOWN} times in a row is tried last; 0 never puts one aside",
    check=_seconds_up_to(MAX_COOLDOWN_S),
)

# [inspector]
INSPECT: Option[bool] = Option(
    INSPECTOR,
    "enabled",
    (bool,),
    True,
    "list the requests passing through for the inspector page (trayproxy inspect); nothing is written to disk",
    flags=("--no-inspector",),
    flag_help="do not list requests for the inspector (default: as the config file's [inspector] says)",
)
INSPECT_BODIES: Option[bool] = Option(
    INSPECTOR,
    "bodies",
    (bool,),
    True,
    "keep request and response bodies (in memory only) for the inspector; false keeps times, status and tokens",
    flags=("--no-inspector-bodies",),
    flag_help="keep no request or response bodies for the inspector, only times, status and tokens",
)
BODY_CAP: Option[int] = Option(
    INSPECTOR,
    "body_cap_mib",
    (int,),
    64,
    "MiB of bodies the inspector keeps in all; the oldest are dropped first",
    check=_whole_number_in(1, 4096, " MiB"),
)
MAX_ROWS: Option[int] = Option(
    INSPECTOR,
    "max_rows",
    (int,),
    10_000,
    "requests the inspector lists; the oldest are dropped first",
    check=_whole_number_in(100, 1_000_000, ""),
)

# [cache]
CACHE_SIZE: Option[int] = Option(
    CACHE,
    "max_mib",
    (int,),
    1024,
    "MiB the recorded answers may take on disk; the least recently used go first",
    check=_whole_number_in(1, 1_048_576, " MiB"),
)
CACHE_PACE: Option[str] = Option(
    CACHE,
    "pace",
    (str,),
    "fast",
    "how a recorded stream is replayed: fast (each piece as soon as the client takes it) or recorded (at the pace it came)",
    choices=("fast", "recorded"),
)

# No place in the file: how long `trayproxy serve` waits for open requests when it stops.
STOP_GRACE: Option[float] = Option(
    None,
    "stop_grace",
    NUMBER,
    10.0,
    "seconds open requests get to finish on stop or SIGTERM; then they are cut",
    flags=("--stop-grace",),
    check=_stop_grace_check,
)

# Each table's settings in the order the parser's hints list them.
TOP_SETTINGS: tuple[Option[Any], ...] = (ACTIVE, PROXY)
LISTEN_SETTINGS: tuple[Option[Any], ...] = (HOSTS, PORT)
SECURITY_SETTINGS: tuple[Option[Any], ...] = (ALLOWED_HOSTS, ALLOWED_ORIGINS, REQUIRE_TOKEN)
LOG_SETTINGS: tuple[Option[Any], ...] = (LEVEL, ACCESS)
TARGET_SETTINGS: tuple[Option[Any], ...] = (
    URL,
    KEY,
    HEADERS,
    STRIP_HEADERS,
    KEEP_HEADERS,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    VERIFY_TLS,
    CA_BUNDLE,
    KEEP_HOST,
    TARGET_PROXY,
    TARGET_PORT,
    PREFIX,
    MODELS,
    MODEL_MAP,
    FALLBACKS,
    CACHE_MODE,
)
# The settings of a target's routes, which routing.py checks together across targets.
CLAIM_SETTINGS: tuple[Option[Any], ...] = (PREFIX, MODELS, MODEL_MAP, FALLBACKS)
FAILOVER_SETTINGS: tuple[Option[Any], ...] = (RETRY_AFTER_MAX, COOLDOWN)
INSPECTOR_SETTINGS: tuple[Option[Any], ...] = (INSPECT, INSPECT_BODIES, BODY_CAP, MAX_ROWS)
CACHE_SETTINGS: tuple[Option[Any], ...] = (CACHE_SIZE, CACHE_PACE)
FILE_SETTINGS: tuple[Option[Any], ...] = (
    *TOP_SETTINGS,
    *LISTEN_SETTINGS,
    *SECURITY_SETTINGS,
    *LOG_SETTINGS,
    *FAILOVER_SETTINGS,
    *INSPECTOR_SETTINGS,
    *CACHE_SETTINGS,
    *TARGET_SETTINGS,
)
