"""The configuration model: small immutable values the engine is built from.

No I/O and no imports from the rest of ``desktop`` but ``options``, where each setting's default
is declared: the config parser builds these values from a file, ``trayproxy serve`` builds them
from flags, and the engine only reads them.
Secrets are resolved before they get here and travel as :class:`Secret`, whose ``repr`` and
``str`` never show the value, so a stray log line or traceback cannot print a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from desktop.config import options

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_PORT",
    "LOCAL_TOKEN_PREFIX",
    "LOG_LEVELS",
    "LOOPBACK_HOSTS",
    "Listener",
    "LogSettings",
    "ProxySettings",
    "Secret",
    "Target",
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
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

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


# The levels a person can choose, quietest last; "debug" also shows aiohttp's own detail.
LOG_LEVELS: tuple[str, ...] = options.LEVEL.choices


@dataclass(frozen=True, slots=True)
class LogSettings:
    """What the log shows: the level of TrayProxy's messages, and the per-request lines."""

    level: str = options.LEVEL.default
    # One line per request (method, path, target, status, bytes, timings), whatever ``level`` says.
    access: bool = options.ACCESS.default


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening address and the target it serves, as a plan wants it.

    ``own`` is None for the main listener, which serves the chosen target; a target with a port
    of its own (``port = 8001`` in its table) gets a listener named by that target, which serves
    it whatever target is chosen, with the main listener's settings on another port."""

    settings: ProxySettings
    target: Target
    own: str | None = None
