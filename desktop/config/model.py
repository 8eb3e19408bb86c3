"""The configuration model: small immutable values the engine is built from.

No I/O and no imports from the rest of ``desktop`` but ``options``, where each setting's default
is declared: the config parser builds these values from a file, ``trayproxy serve`` builds them
from flags, and the engine only reads them. What a listen host, a header and a URL's port must
be for the engine to use them is said here once (``host_problem`` ...), and each value checks
itself with it when made, behind the parser's and the flags' own checks.
Secrets are resolved before they get here and travel as :class:`Secret`, whose ``repr`` and
``str`` never show the value, so a stray log line or traceback cannot print a key.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from desktop.config import options
from desktop.routing import RouteTable

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_PORT",
    "LOCAL_TOKEN_PREFIX",
    "LOG_LEVELS",
    "LOOPBACK_HOSTS",
    "Failover",
    "Listener",
    "LogSettings",
    "ProxySettings",
    "Recording",
    "Routing",
    "Secret",
    "Target",
    "control_character",
    "header_problem",
    "host_problem",
    "url_port_problem",
]

DEFAULT_PORT = options.PORT.default
# Starts every local access token TrayProxy makes, so one is recognisable (and redacted) as such.
LOCAL_TOKEN_PREFIX = "tp-local-"
# Both loopback families (options.HOSTS says why).
LOOPBACK_HOSTS: tuple[str, ...] = options.HOSTS.default
# Host header names that mean "this machine" (DNS-rebinding defence; the port is not compared).
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]", "::1")
# Origins of pages and apps that run on this machine. "*" matches any port; a value ending in
# "://" allows a whole scheme (editor webviews and desktop-app shells send these).
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = (
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    # Dev servers on HTTPS (Vite's --https, mkcert certificates) are this machine too.
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
    "vscode-webview://",
    "vscode-file://",
    "app://",
    "tauri://",
)


# What the engine can use, beyond a value's type: the parser and serve's flags ask here, with
# their own words around the answer, and Target and ProxySettings check themselves with it.

# One label of a host name (RFC 1123 §2.1), underscores allowed as resolvers allow them.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# The longest host name, without its final dot (RFC 1035 §2.3.4).
_MAX_HOST_NAME = 253
# A header name is an RFC 9110 §5.6.2 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Control characters a header value may not hold (RFC 9110 §5.5: a field value is visible
# characters, spaces and tabs): CR or LF would end the header line, so aiohttp refused to send
# it and every request failed with 500.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_NAMES = {"\r": "a carriage return (\\r)", "\n": "a line feed (\\n)", "\x00": "a NUL byte (\\0)"}


def host_problem(host: str) -> str | None:
    """What is wrong with ``host`` as an address to listen on, worded to follow it ("'' is not
    a host name ..."); None for an IP address or a host name.

    asyncio hands any string to getaddrinfo, which takes "" as every interface and "0" or
    "0x0" as 0.0.0.0: such a value listened on every interface while `config check` said OK.
    """
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host.startswith("[") and host.endswith("]"):
        return f'is an IPv6 address in brackets; write it without them, as "{host[1:-1]}"'
    try:
        # What the system's resolver reads as an IPv4 address although ipaddress does not:
        # a number alone or short forms ("0", "127.1", "0x7f000001").
        shorthand: str | None = socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, ValueError):
        shorthand = None
    if shorthand is not None:
        every = ", every interface" if shorthand == "0.0.0.0" else ""
        return f'is read by the system as {shorthand}{every}; write "{shorthand}" if that is what you mean'
    name = host.removesuffix(".")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if (
        ascii_name
        and len(ascii_name) <= _MAX_HOST_NAME
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        # An all-numeric last label makes an IPv4 address, never a name (RFC 3696 §2).
        and not labels[-1].isdigit()
    ):
        return None
    return (
        'is not a host name or an IP address; write one such as "127.0.0.1", "::1" or "localhost"'
        ' ("0.0.0.0" or "::" listen on every interface, which lets other machines in)'
    )


def control_character(text: str) -> str | None:
    """The first character ``text`` may not carry in a header value, named for a person
    ("a line feed (\\n)"); None when there is none. Never shows the rest of ``text``."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    char = found.group()
    return _CONTROL_NAMES.get(char, f"the control character U+{ord(char):04X}")


def header_problem(name: str, value: str) -> str | None:
    """What keeps ``name: value`` from being sent as a header; None when it can be. The value
    is never quoted: it may be a key."""
    if not _HEADER_NAME.fullmatch(name):
        return f"{name!r} is not a header name; use letters, digits and '-' (no spaces or colons)"
    char = control_character(value)
    if char:
        return f"the value of {name!r} holds {char}, which a header cannot carry; remove it"
    return None


def url_port_problem(url: str) -> str | None:
    """What is wrong with the port written in ``url``; None when it has none or a good one.
    (urlsplit reads "host:99999" or "host:8o80" and fails only when the port is asked for,
    which the engine did for every request, answering 500.)"""
    try:
        port = urlsplit(url).port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if port == 0:
        return "has port 0, which no server listens on; write its port (1 to 65535)"
    return None


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential; it prints as ``***`` wherever it ends up."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def reveal(self) -> str:
        """Return the real value; call it only where the value goes on the wire."""
        return self.value


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go and what the proxy adds to them.

    ``url`` is an absolute http(s) URL whose path, if any, is prefixed to every forwarded path
    (``https://gateway.example/openai`` sends ``/v1/models`` to ``/openai/v1/models``).
    """

    url: str
    name: str = ""
    # Headers set on every upstream request, replacing any the client sent under that name.
    add_headers: tuple[tuple[str, Secret], ...] = ()
    # Header names (any case) removed from client requests before forwarding.
    strip_headers: frozenset[str] = frozenset()
    # Names from redaction.CREDENTIAL_HEADERS (lower-case) the client's request keeps although this
    # target adds a credential header of its own; by default the client's other ones go.
    keep_headers: frozenset[str] = frozenset()
    # Time allowed to open a TCP (and TLS) connection to the target.
    connect_timeout_s: float = options.CONNECT_TIMEOUT.default
    # Time allowed until response headers arrive, and between two chunks of a response body.
    read_timeout_s: float = options.READ_TIMEOUT.default
    # Verify the target's certificate (against the OS trust store unless ca_bundle is given).
    verify_tls: bool = options.VERIFY_TLS.default
    ca_bundle: str | None = options.CA_BUNDLE.default
    # Send the client's Host header instead of the target's (for virtual-hosted gateways).
    keep_host: bool = options.KEEP_HOST.default
    # Outgoing proxy URL for this target; "" connects directly; None follows HTTPS_PROXY,
    # HTTP_PROXY and NO_PROXY from the environment.
    proxy: str | None = options.TARGET_PROXY.default
    # Whether answers are recorded, replayed or answered offline (engine/recall.py).
    cache: str = options.CACHE_MODE.default

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"target URL must start with http:// or https://, got {self.url!r}")
        if not parts.hostname:
            raise ValueError(f"target URL has no host: {self.url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"target URL may carry a path but no query or fragment: {self.url!r}")
        if parts.username or parts.password:
            raise ValueError("target URL must not carry credentials; add a header instead")
        # The parser and serve's flags check the rest in their own words; these stand behind them.
        port_problem = url_port_problem(self.url)
        if port_problem:
            raise ValueError(f"target URL {port_problem}: {self.url!r}")
        if options.CONNECT_TIMEOUT.problem(self.connect_timeout_s) or options.READ_TIMEOUT.problem(self.read_timeout_s):
            raise ValueError("timeouts must be positive, finite numbers of seconds")
        for name, value in self.add_headers:
            problem = header_problem(name, value.reveal())
            if problem:
                raise ValueError(problem)
        if self.cache not in options.CACHE_MODE.choices:
            raise ValueError(f"cache must be one of {', '.join(options.CACHE_MODE.choices)}, got {self.cache!r}")
        proxy_problem = url_port_problem(self.proxy) if self.proxy else None
        if proxy_problem:
            raise ValueError(f"the proxy URL {proxy_problem}")

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` exactly as written in the URL."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        """The URL's path without a trailing slash; ``""`` when it has none."""
        return urlsplit(self.url).path.rstrip("/")

    @property
    def display_name(self) -> str:
        """Which target this is: the name, or the URL when the target has none. Shown to people
        only through redaction.display_target, which masks a key written into the URL."""
        return self.name or self.url

    def secrets(self) -> tuple[str, ...]:
        """Every credential value this target carries, for the log redactor.

        A value like ``Bearer gsk_...`` is given whole and also without its scheme word, so
        the bare key is masked where it shows up alone (an upstream's error message)."""
        found: list[str] = []
        for _, value in self.add_headers:
            text = value.reveal()
            found.append(text)
            scheme, _, credential = text.partition(" ")
            if credential.strip() and scheme.isalpha():
                found.append(credential.strip())
        if self.proxy:
            password = urlsplit(self.proxy).password
            if password:
                found.append(password)
        return tuple(found)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """How the local listener behaves; the target is set separately and can change live."""

    # Addresses to listen on; the default is both loopback families.
    hosts: tuple[str, ...] = options.HOSTS.default
    # 0 picks a free port (tests); the first address's port is then reused for the others.
    port: int = DEFAULT_PORT
    # Host header names accepted (DNS-rebinding defence), compared without the port.
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    # Origin header values accepted; requests from any other web origin get 403.
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    # Time in-flight requests get to finish when the proxy stops.
    stop_grace_s: float = options.STOP_GRACE.default
    # One line per request at INFO on the "trayproxy.access" logger.
    access_log: bool = options.ACCESS.default
    # Clients must send ``local_token`` as their API key ([security] require_token); off by
    # default, when any program on this machine may use the proxy and the keys it adds.
    require_token: bool = options.REQUIRE_TOKEN.default
    # The token they must send, read from its file by the controller; while it is required but
    # None (the file could not be read), every request is refused.
    local_token: Secret | None = None

    def __post_init__(self) -> None:
        # Behind the parser's and serve's checks: asyncio would take "" or "0" as every interface.
        for host in self.hosts:
            problem = host_problem(host)
            if problem:
                raise ValueError(f"listen address {host!r} {problem}")
        grace_problem = options.STOP_GRACE.problem(self.stop_grace_s)
        if grace_problem:
            raise ValueError(f"stop grace {grace_problem}")


# The levels a person can choose, quietest last; "debug" also shows aiohttp's own detail.
LOG_LEVELS: tuple[str, ...] = options.LEVEL.choices


@dataclass(frozen=True, slots=True)
class LogSettings:
    """What the log shows: the level of TrayProxy's messages, and the per-request lines."""

    level: str = options.LEVEL.default
    # One line per request (method, path, target, status, bytes, timings), whatever ``level`` says.
    access: bool = options.ACCESS.default


# How long a 429's Retry-After may be for the same target to be asked once more after it.
RETRY_AFTER_MAX_S: float = options.RETRY_AFTER_MAX.default
# A target failing this many times in a row (before any byte reached the client) is tried last
# for COOLDOWN_S, so requests stop waiting on it first.
FAILURES_FOR_COOLDOWN = options.FAILURES_FOR_COOLDOWN
COOLDOWN_S: float = options.COOLDOWN.default


@dataclass(frozen=True, slots=True)
class Failover:
    """How failover waits, as the file's ``[failover]`` says: the longest 429 Retry-After worth
    waiting out before asking the same target again, and how long a failing target is tried last."""

    retry_after_max_s: float = RETRY_AFTER_MAX_S
    cooldown_s: float = COOLDOWN_S

    def __post_init__(self) -> None:
        # Behind the parser's checks: a wait of nan or inf would hold a request for good.
        problem = options.RETRY_AFTER_MAX.problem(self.retry_after_max_s) or options.COOLDOWN.problem(self.cooldown_s)
        if problem:
            raise ValueError(f"failover {problem}")


@dataclass(frozen=True, slots=True)
class Inspection:
    """What the inspector keeps, as the file's ``[inspector]`` says: whether requests are listed
    at all, whether their bodies are kept (in memory only), and its bounds."""

    enabled: bool = options.INSPECT.default
    keep_bodies: bool = options.INSPECT_BODIES.default
    body_cap_mib: int = options.BODY_CAP.default
    max_rows: int = options.MAX_ROWS.default

    def __post_init__(self) -> None:
        problem = options.BODY_CAP.problem(self.body_cap_mib) or options.MAX_ROWS.problem(self.max_rows)
        if problem:
            raise ValueError(f"inspector {problem}")


@dataclass(frozen=True, slots=True)
class Recording:
    """The recording of answers, as the file's ``[cache]`` says (each target's ``cache`` mode
    says whether its requests use it)."""

    max_mib: int = options.CACHE_SIZE.default
    pace: str = options.CACHE_PACE.default

    def __post_init__(self) -> None:
        problem = options.CACHE_SIZE.problem(self.max_mib)
        if problem:
            raise ValueError(f"cache {problem}")
        if self.pace not in options.CACHE_PACE.choices:
            raise ValueError(f"cache pace must be one of {', '.join(options.CACHE_PACE.choices)}")


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a listener sends what its one target does not take: the route table (prefixes,
    model globs, renames, fallbacks, the default being the listener's target), every other
    target the table names with its key read, and how failover waits.

    A listener without one (None) sends everything to its target, as before routes existed."""

    table: RouteTable
    # The targets the table names besides the listener's own (``Target.name`` as in the table).
    targets: tuple[Target, ...] = ()
    retry_after_max_s: float = RETRY_AFTER_MAX_S
    cooldown_s: float = COOLDOWN_S
    failures_for_cooldown: int = FAILURES_FOR_COOLDOWN

    def __post_init__(self) -> None:
        names = [target.name for target in self.targets]
        if len(set(names)) != len(names) or "" in names:
            raise ValueError("a routing's targets each need a name of their own")


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening address and the target it serves, as a plan wants it.

    ``own`` is None for the main listener, which serves the chosen target; a target with a port
    of its own (``port = 8001`` in its table) gets a listener named by that target, which serves
    it whatever target is chosen, with the main listener's settings on another port."""

    settings: ProxySettings
    target: Target
    own: str | None = None
    # Routes and failover (None: every request goes to ``target``, the fast path).
    routing: Routing | None = None
