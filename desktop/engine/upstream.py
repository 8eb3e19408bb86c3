"""The transport to one target: a pooled client session and everything fixed per target.

Built once when a target becomes active and reused by every request to it: connection pool,
TLS context (the OS trust store by default, so corporate CAs work), proxy settings from the
environment (read here, once, not per request), timeouts and header rules. Each target keeps
its own pool; a target that is switched away from is closed once its last request finishes.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import socket
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDict
from yarl import URL

from desktop.config.model import Target
from desktop.engine.exactrequest import SKIP_AUTO_HEADERS, ExactRequest
from desktop.engine.headers import RawHeaders, RequestHeaderRules
from desktop.redaction import display_target

if TYPE_CHECKING:
    from desktop.engine.leansend import LeanSender

__all__ = [
    "REUSE_NOTE",
    "ReuseNote",
    "Upstream",
    "build_ssl_context",
    "environment_proxy",
    "target_proxy",
]

log = logging.getLogger("trayproxy.upstream")

# Idle pooled connections are closed after this long. Below uvicorn's 5 s default keep-alive
# (vLLM and most Python servers), so we close first and never reuse a connection the server
# is about to drop; a dead reused connection is still retried once (see forward.py).
IDLE_KEEPALIVE_S = 4.0
# Upstream response header limits: gateways send long CSP and cookie lines, and refusing a
# target's answer over a header size is worse than holding a few more KiB.
MAX_RESPONSE_LINE_BYTES = 65536
# Resolved addresses are kept briefly so a burst of requests costs one lookup.
DNS_CACHE_TTL_S = 10


def build_ssl_context(target: Target) -> ssl.SSLContext | bool:
    """TLS settings for ``target``: OS trust store, a given CA bundle, or no verification."""
    if not target.verify_tls:
        return False
    if target.ca_bundle:
        return ssl.create_default_context(cafile=target.ca_bundle)
    try:
        import truststore
    except ImportError:  # pragma: no cover - truststore is a dependency; certifi is the fallback
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        info = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(entry[4][0]).is_loopback for entry in info)


def environment_proxy(url: str) -> tuple[URL | None, str | None]:
    """The HTTP(S)_PROXY to use for ``url`` honouring NO_PROXY, read from the environment now.

    aiohttp's ``trust_env`` would re-read this and ``~/.netrc`` on every request (and may add
    netrc credentials the user never meant for the target), so it stays off.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or not parts.hostname:
        return None, None
    # A proxy elsewhere cannot reach this machine's loopback (a local Ollama or vLLM): such a
    # target goes direct whatever NO_PROXY says, as Go's net/http does. A target's own
    # `proxy` setting still applies (target_proxy).
    if is_loopback(parts.hostname):
        return None, None
    if urllib.request.proxy_bypass(parts.hostname):
        return None, None
    return _split_credentials(proxy)


def target_proxy(target: Target) -> tuple[URL | None, str | None]:
    """The outgoing proxy for ``target``: its own setting, else the environment's."""
    if target.proxy is None:
        return environment_proxy(target.url)
    if not target.proxy:
        return None, None  # proxy = false: connect directly whatever the environment says
    return _split_credentials(target.proxy)


def _split_credentials(proxy: str) -> tuple[URL, str | None]:
    """The proxy URL without credentials, and those credentials as a Basic header value."""
    if "://" not in proxy:
        proxy = "http://" + proxy
    proxy_url = URL(proxy)
    authorization = None
    if proxy_url.user:
        # RFC 7617, UTF-8: what aiohttp.encode_basic_auth does, which aiohttp 3.12 lacks (and
        # its BasicAuth is deprecated in 3.14).
        credentials = f"{proxy_url.user}:{proxy_url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        proxy_url = proxy_url.with_user(None)
    return proxy_url, authorization


# Upstream.send drives aiohttp's request, connector and response itself on the aiohttp
# version leansend.py was read against (about 14 % less CPU per small request); any other
# version sends through ClientSession.request.
LEAN_SEND = aiohttp.__version__.startswith("3.14.")
# Request targets whose upstream URL is kept parsed, per target.
MAX_CACHED_URLS = 1024
# aiohttp's default limit on the number of response headers.
MAX_RESPONSE_HEADERS = 128
# How much of a response body aiohttp buffers before it stops reading the socket (its default
# since 3.13; 64 KiB before), the same whichever way the request was sent.
READ_BUFFER_BYTES = 2**18
# aiohttp's default: read timeouts above this many seconds are rounded up to whole seconds.
TIMEOUT_CEIL_THRESHOLD_S = 5.0


class _NotRetried(Exception):
    """A failure aiohttp's session would have answered by sending the request again."""

    def __init__(self, error: aiohttp.ClientError) -> None:
        super().__init__(error)
        self.error = error


# The responses to what this task sends through the session, for whoever set a list here:
# a bridged WebSocket's handshake answer, which aiohttp's ClientWebSocketResponse keeps private.
_RESPONSES_SEEN: ContextVar[list[aiohttp.ClientResponse] | None] = ContextVar(
    "trayproxy_responses_seen", default=None
)


async def _send_once(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Session middleware: each request goes out once.

    ClientSession re-sends an idempotent request once by itself when its connection fails,
    even a fresh connection, where the request may have reached the target; forward.py
    decides retries (only on dead pooled connections). aiohttp offers no public switch (its
    own TestClient sets a private field; aio-libs/aiohttp#10790), but it retries only on
    ClientOSError and ServerDisconnectedError: raised through this middleware as _NotRetried,
    they reach Upstream, which raises them again as they were."""
    try:
        response = await handler(request)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise  # never retried by aiohttp
        raise _NotRetried(exc) from exc
    seen = _RESPONSES_SEEN.get()
    if seen is not None:
        seen.append(response)
    return response


class ReuseNote:
    """Whether the connection a request went out on came from the pool (see forward.py)."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


# The note of the request this task is sending; forward.py sets it around each attempt. A
# context variable rather than aiohttp's trace hooks: with any TraceConfig aiohttp awaits a
# dozen trace signals per request, about 4 % of a small request's CPU.
REUSE_NOTE: ContextVar[ReuseNote | None] = ContextVar("trayproxy_reuse_note", default=None)


class _PoolConnector(aiohttp.TCPConnector):
    """TCPConnector that notes when it hands out a connection it handed out before.

    The forward handler retries a failed request only when the failed connection came from
    the pool: that is the one case where the request cannot have reached the target."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            if protocol in self._handed_out:
                note = REUSE_NOTE.get()
                if note is not None:
                    note.reused = True
            else:
                self._handed_out.add(protocol)
        return connection


class Upstream:
    """One target's connection pool and per-target constants."""

    __slots__ = (
        "_lean",
        "_urls",
        "active",
        "base_path",
        "condition",
        "label",
        "prefix",
        "proxy",
        "proxy_authorization",
        "proxy_headers",
        "retired",
        "rules",
        "session",
        "target",
    )

    def __init__(self, target: Target, *, resolver: AbstractResolver | None = None) -> None:
        """Open the pool for ``target``; call on the proxy's event loop."""
        self.target = target
        # The target as people see it named (error answers, access lines, the tray).
        self.label = display_target(target)
        self.rules = RequestHeaderRules(target)
        self.base_path = target.base_path
        self.prefix = target.origin + self.base_path
        self.proxy, self.proxy_authorization = target_proxy(target)
        # Proxy credentials ride on the CONNECT for https targets; for http targets, whose
        # requests go to the proxy itself, forward.py adds them to each request.
        self.proxy_headers = (
            {"Proxy-Authorization": self.proxy_authorization}
            if self.proxy_authorization and target.url.startswith("https:")
            else None
        )
        # Requests in flight on this pool, so a retired pool closes when the last one ends.
        self.active = 0
        self.retired = False
        # The kind of the last telling answer (condition.py); None until the first.
        self.condition: str | None = None
        connector = _PoolConnector(
            limit=0,  # no cap: 200 concurrent streams must not queue behind each other
            keepalive_timeout=IDLE_KEEPALIVE_S,
            ssl=build_ssl_context(target),
            resolver=resolver,
            ttl_dns_cache=DNS_CACHE_TTL_S,
            timeout_ceil_threshold=TIMEOUT_CEIL_THRESHOLD_S,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,  # a stream may last an hour; only gaps are bounded
                connect=target.connect_timeout_s,
                sock_connect=target.connect_timeout_s,
                sock_read=target.read_timeout_s,
            ),
            auto_decompress=False,  # bytes pass through as the target encoded them
            trust_env=False,  # proxies are resolved once above
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies belong to the client, not to us
            max_line_size=MAX_RESPONSE_LINE_BYTES,
            max_field_size=MAX_RESPONSE_LINE_BYTES,
            requote_redirect_url=False,
            request_class=ExactRequest,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            read_bufsize=READ_BUFFER_BYTES,
            middlewares=(_send_once,),
        )
        self._urls: dict[str, URL] = {}
        self._lean: LeanSender | None = None
        if LEAN_SEND:
            from desktop.engine import leansend  # aiohttp internals, on the version read (see there)

            self._lean = leansend.LeanSender(
                self.session,
                connector,
                timeout_ceil_threshold_s=TIMEOUT_CEIL_THRESHOLD_S,
                read_buffer_bytes=READ_BUFFER_BYTES,
                max_line_bytes=MAX_RESPONSE_LINE_BYTES,
                max_headers=MAX_RESPONSE_HEADERS,
            )
        if self.proxy is not None:
            log.info("requests to %s go through the proxy %s", self.label, self.proxy)

    async def send(
        self, method: str, url: URL, headers: CIMultiDict[str], body: bytes | AsyncIterator[bytes] | None
    ) -> aiohttp.ClientResponse:
        """Send one request; return the response once its head is in. Raises aiohttp's
        client exceptions as ``ClientSession.request`` does."""
        if LEAN_SEND and self._lean is not None:
            return await self._lean.send(
                method, url, headers, body, proxy=self.proxy, proxy_headers=self.proxy_headers
            )
        return await self.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            proxy=self.proxy,
            proxy_headers=self.proxy_headers,
        )

    async def request(self, method: str, url: URL, **options: Any) -> aiohttp.ClientResponse:
        """``ClientSession.request(method, url, **options)``, sent once (see _send_once)."""
        try:
            return await self.session.request(method, url, **options)
        except _NotRetried as wrapped:
            raise wrapped.error from wrapped.error.__cause__

    async def ws_connect(
        self, url: URL, **options: Any
    ) -> tuple[aiohttp.ClientWebSocketResponse, RawHeaders]:
        """``ClientSession.ws_connect(url, **options)``, sent once, and the headers of the
        target's 101 answer."""
        seen: list[aiohttp.ClientResponse] = []
        token = _RESPONSES_SEEN.set(seen)
        try:
            websocket = await self.session.ws_connect(url, **options)
        except _NotRetried as wrapped:
            raise wrapped.error from wrapped.error.__cause__
        finally:
            _RESPONSES_SEEN.reset(token)
        return websocket, seen[-1].raw_headers if seen else ()

    def url_for(self, raw_target: str) -> URL:
        """The upstream URL for a request target, byte for byte: nothing is re-quoted."""
        url = self._urls.get(raw_target)
        if url is None:
            url = URL(self.prefix + raw_target, encoded=True)
            # Tools ask for the same few paths again and again; a URL is parsed once per path
            # (URLs are immutable). Bounded, since clients choose the paths.
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[raw_target] = url
        return url

    async def close(self) -> None:
        """Close the pool; open requests on it are cut."""
        await self.session.close()
