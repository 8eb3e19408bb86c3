"""Safety checks every request passes before anything is forwarded.

The proxy adds the user's credentials, so anything that can make it send a request spends
them. Only local tools may: a web page the user visits (another Origin, or a browser's
``Sec-Fetch-Site: cross-site`` on the requests that carry no Origin), a browser's prefetch or
prerender (``Sec-Purpose``) or a DNS-rebinding page (another Host) gets 403, absolute-form targets (use as an open forward proxy), methods outside
FORWARDED_METHODS, message framing that two parsers could read two ways (request smuggling) and
two Origin or Sec-Fetch-Site headers get 400, and oversized headers get 431. The options are
checked once, when the guard is built.

aiohttp's C parser (llhttp) refuses some of these before the guard sees them; its pure-Python
parser (AIOHTTP_NO_EXTENSIONS=1, or a platform without the C extension) lets more through. The
guard checks everything the request head shows, so both parsers give the same answers; server.py
gives the C parser's refusals the guard's codes and words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from desktop.engine import refusals
from desktop.engine.errors import RequestRefused
from desktop.engine.refusals import MAX_CONTENT_LENGTH

__all__ = [
    "FORWARDED_METHODS",
    "MAX_HEADERS_TOTAL_BYTES",
    "MAX_HEADER_BYTES",
    "RequestGuard",
    "browsers_mark",
    "unmarked_host_warnings",
]

# One header line (name, ": ", value) may be this long; aiohttp's parser already refuses a
# value over 8190 bytes with 400 before we see it (its max_field_size), so 431 answers lines
# of 8 KiB up to that (tests/engine/test_guard.py pins both).
MAX_HEADER_BYTES = 8 * 1024
# All header lines together; aiohttp has no total limit of its own.
MAX_HEADERS_TOTAL_BYTES = 32 * 1024

# Methods forwarded: exactly those llhttp (aiohttp's C parser, the default) parses, so a user of
# the C parser sees no change: RFC 9110's, PATCH (RFC 5789), the WebDAV family (RFC 4918 and its
# extensions: DeltaV RFC 3253, ACL RFC 3744, SEARCH RFC 5323, BIND RFC 5842, CalDAV RFC 4791;
# LINK/UNLINK of RFC 2068), QUERY (httpbis draft), PURGE, SOURCE and the UPnP ones. llhttp refuses
# any other before the guard runs, while the pure-Python parser takes any token: refusing the
# rest here makes both answer alike (tests/engine/test_guard.py sends each under both). PRI is
# left out: llhttp takes it only as the HTTP/2 preface; CONNECT is refused on its own.
FORWARDED_METHODS = frozenset(
    {
        # RFC 9110 §9
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE",
        "PATCH",
        # WebDAV and its extensions
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
        "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "ACL", "SEARCH",
        "BIND", "REBIND", "UNBIND", "MKCALENDAR", "LINK", "UNLINK",
        # others llhttp knows
        "QUERY", "PURGE", "SOURCE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
    }
)  # fmt: skip


def _hostname(host: str) -> str:
    """``host`` from a Host header value ``host[:port]`` or ``[v6][:port]``, lower-cased."""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        if end > 0 and (rest == "" or (rest.startswith(":") and rest[1:].isdigit())):
            return host[: end + 1].lower()
        return host.lower()
    if host.count(":") == 1:
        return host.split(":", 1)[0].lower()
    return host.lower()


def _is_length(value: bytes) -> bool:
    """True for a Content-Length of ASCII digits only (RFC 9110 §8.6: no sign, no list) up to
    MAX_CONTENT_LENGTH."""
    # The length check first: int() refuses strings of over 4300 digits (sys.int_info).
    return value.isdigit() and len(value) <= len(str(MAX_CONTENT_LENGTH)) and int(value) <= MAX_CONTENT_LENGTH


class _OriginRule:
    """Allowed origins: exact values, ``scheme://host:*`` wildcards and whole ``scheme://``."""

    __slots__ = ("exact", "schemes", "wildcard_hosts")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        wildcard: set[str] = set()
        schemes: list[str] = []
        for pattern in patterns:
            pattern = pattern.strip().lower()
            if pattern.endswith("://"):
                schemes.append(pattern)
                continue
            pattern = pattern.rstrip("/")
            if pattern.endswith(":*"):
                wildcard.add(pattern[:-2])
            else:
                exact.add(pattern)
        self.exact = frozenset(exact)
        self.wildcard_hosts = frozenset(wildcard)
        self.schemes = tuple(schemes)

    def allows(self, origin: str) -> bool:
        origin = origin.lower()
        if origin in self.exact or self.allows_every_port(origin):
            return True
        base, sep, port = origin.rpartition(":")
        return bool(sep) and port.isdigit() and base in self.wildcard_hosts

    def allows_every_port(self, origin: str) -> bool:
        """True when ``scheme://host`` is allowed whatever its port (``scheme://host:*``, or
        the whole scheme)."""
        origin = origin.lower()
        if origin in self.wildcard_hosts:
            return True
        return origin.startswith(self.schemes) if self.schemes else False


# Fetch Metadata (W3C "Fetch Metadata Request Headers"): what a browser says about who made the
# request. Browsers add it to every request to 127.0.0.1, [::1] and localhost (potentially
# trustworthy URLs) and page scripts cannot set or remove it; SDKs, curl and the like send none.
_SITE_PERSON = b"none"  # typed URL, bookmark, a link opened from another app
_SITE_SAME_ORIGIN = b"same-origin"  # a page TrayProxy itself served (the target's own pages)
_SITE_SAME_SITE = b"same-site"


# Headers a browser puts on a load it makes ahead of time, by itself: Sec-Purpose (Fetch
# standard; "prefetch", "prefetch;prerender", "prefetch;anonymous-client-ip") on link
# prefetches and on Chromium's speculation rules; the older Purpose (Chromium's <link
# rel=prefetch>), X-Moz (Firefox before 115) and X-Purpose (Safari's previews). Pages cannot set
# Sec-Purpose, and the legacy names are read only with a speculative value, so a tool's own
# header of that name still passes.
_SPECULATIVE_HEADER = b"sec-purpose"
_LEGACY_SPECULATIVE_HEADERS = frozenset({b"purpose", b"x-moz", b"x-purpose"})
_SPECULATIVE_VALUES = (b"prefetch", b"prerender", b"preview")


def browsers_mark(host: str) -> bool:
    """True when browsers send Fetch Metadata (Sec-Fetch-Site) to ``http://host``: only to a
    potentially trustworthy origin (W3C Secure Contexts), which for plain http is localhost,
    a name under .localhost, 127.0.0.0/8 and [::1]. To any other name (``devbox.local``, a LAN
    address) a page's <img>, <iframe> or link carries neither Fetch Metadata nor an Origin."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def unmarked_host_warnings(allowed_hosts: Iterable[str], *, require_token: bool) -> list[str]:
    """A warning for each allowed host browsers send no Fetch Metadata to, unless the local
    token is required (then a page cannot spend the key anyway)."""
    if require_token:
        return []
    names = dict.fromkeys(h.strip() for h in allowed_hosts if h.strip() and not browsers_mark(h))
    return [
        f"allowed host {name}: browsers mark no request to it as a web page's, so a page's "
        "<img>, frame or link is told from your own tools only by the browser's User-Agent "
        "(refused); require_token = true under [security] is the sure protection"
        for name in names
    ]


# The User-Agent every browser sends (Chromium, Firefox, Safari and their embeddings alike).
_BROWSER_AGENT = b"mozilla/"


class RequestGuard:
    """Refuses requests that must not reach the target; ``check`` returns the refusal or None."""

    __slots__ = ("_hosts", "_origins", "_unmarked_hosts")

    def __init__(self, *, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> None:
        self._hosts = frozenset(_hostname(h.strip()) for h in allowed_hosts if h.strip())
        self._origins = _OriginRule(allowed_origins)
        # Allowed hosts browsers send no Fetch Metadata to: non-loopback names the person added
        # (devbox.local, a LAN address). There a foreign page's <img>, <script>, <iframe>, link
        # or GET form reaches the proxy with nothing that tells it from the person's own
        # request, and would be sent on with the key. What it still carries is the browser's
        # User-Agent ("Mozilla/5.0 ..."), which markup cannot change. A page's fetch() cannot
        # either: no-cors mode drops the header, and in cors mode setting it makes the request
        # preflighted, and it carries the page's Origin (refused unless allowed). So on these
        # hosts a request with a browser's User-Agent and neither Fetch Metadata nor an Origin
        # is taken for a page's and refused; SDKs and curl do not call themselves Mozilla. A
        # tool that does, or the person's own browser tab on that name, is refused as well:
        # require_token is the sure protection there (the controller and config check say so).
        self._unmarked_hosts = frozenset(host for host in self._hosts if not browsers_mark(host))

    def check(self, request: web.BaseRequest) -> RequestRefused | None:
        """The refusal for ``request``, or None when it may be forwarded."""
        # First, as llhttp refuses an unknown method before it reads the target or any header.
        if request.method == "CONNECT":
            return refusals.connect_refused()
        if request.method not in FORWARDED_METHODS:
            return refusals.unknown_method()
        if not request.raw_path.isascii():
            # llhttp refuses raw non-ASCII bytes before we see them; the pure-Python parser
            # (no C extension for the platform) lets them through as surrogate escapes.
            return refusals.unencoded_target()
        if not request.raw_path.startswith("/"):
            return RequestRefused(
                "TrayProxy is not a forward proxy: send requests to a path such as /v1/models",
                code="absolute_form_refused",
            )
        host_count = 0
        host = ""
        origins: list[str] = []
        fetch_sites: list[bytes] = []
        speculative = False
        service_worker = False
        browser_agent = False
        total = 0
        content_lengths: list[bytes] = []
        transfer_encodings: list[bytes] = []
        for name, value in request.raw_headers:
            size = len(name) + len(value) + 4  # ": " and CRLF
            if size > MAX_HEADER_BYTES:
                return RequestRefused(
                    f"A request header is longer than {MAX_HEADER_BYTES} bytes",
                    code="header_too_large",
                    status=431,
                )
            total += size
            lower = name.lower()
            if lower == b"host":
                host_count += 1
                host = value.decode("latin-1").strip()
            elif lower == b"origin":
                origins.append(value.decode("latin-1").strip())
            elif lower == b"sec-fetch-site":
                fetch_sites.append(value.strip().lower())
            elif lower == b"content-length":
                content_lengths.append(value.strip())
            elif lower == b"transfer-encoding":
                transfer_encodings.append(value.strip())
            elif lower == b"service-worker":
                service_worker = True
            elif lower == b"user-agent":
                browser_agent = browser_agent or value.lstrip().lower().startswith(_BROWSER_AGENT)
            elif lower == _SPECULATIVE_HEADER or (
                lower in _LEGACY_SPECULATIVE_HEADERS
                and any(word in value.lower() for word in _SPECULATIVE_VALUES)
            ):
                speculative = True
        if total > MAX_HEADERS_TOTAL_BYTES:
            return RequestRefused(
                f"The request headers add up to more than {MAX_HEADERS_TOTAL_BYTES} bytes",
                code="headers_too_large",
                status=431,
            )
        # RFC 9112 §6.3: both framings, several or unreadable lengths, or a transfer coding that
        # is not plain chunked are how requests get smuggled (each peer finds another end).
        if content_lengths and transfer_encodings:
            return refusals.both_framings()
        if len(content_lengths) > 1:
            return refusals.conflicting_lengths()
        if content_lengths and not _is_length(content_lengths[0]):
            return refusals.invalid_length()
        if transfer_encodings and (
            len(transfer_encodings) > 1 or transfer_encodings[0].lower() != b"chunked"
        ):
            return refusals.bad_transfer_encoding()
        if host_count != 1 or not host:
            return refusals.bad_host()
        hostname = _hostname(host)
        if hostname not in self._hosts:
            return RequestRefused(
                "This Host is not allowed to use TrayProxy (DNS rebinding protection); "
                "add it to the allowed hosts to permit it",
                code="host_not_allowed",
                status=403,
            )
        if len(origins) > 1 or len(fetch_sites) > 1:
            return refusals.ambiguous_origin()
        if speculative:
            return refusals.speculative_load()
        if service_worker:
            return refusals.service_worker()
        origin = origins[0] if origins else None
        if origin is not None and not self._origins.allows(origin):
            return RequestRefused(
                "Requests from web pages of this origin are not allowed to use TrayProxy; "
                "add the origin to the allowed origins to permit it",
                code="origin_not_allowed",
                status=403,
            )
        if fetch_sites and not self._is_own_or_allowed_page(fetch_sites[0], origin, host):
            return refusals.cross_site()
        if not fetch_sites and origin is None and browser_agent and hostname in self._unmarked_hosts:
            return refusals.unmarked_browser_request()
        if (
            fetch_sites
            and request.method in ("GET", "HEAD")
            and request.raw_path.split("?", 1)[0] == "/favicon.ico"
        ):
            return refusals.browser_favicon()
        return None

    def _is_own_or_allowed_page(self, fetch_site: bytes, origin: str | None, host: str) -> bool:
        """Whether a browser request marked ``Sec-Fetch-Site: fetch_site`` may go on.

        Browsers send no Origin on GET/HEAD requests of <img>, <script>, <link>, <iframe>,
        navigations and GET forms, nor on fetch(..., {mode: "no-cors"}): the Origin check above
        never sees those, yet each one would reach the target with the key (the page cannot read
        the answer, but the key is spent). Fetch Metadata names them. The published "resource
        isolation policy" lets cross-site navigations through to keep links working; a proxy
        that adds a credential has no links to keep, so none pass.
        """
        if fetch_site in (_SITE_PERSON, _SITE_SAME_ORIGIN):
            return True
        if origin is not None:
            # The browser said which page asked, and the check above allowed it: a local dev
            # server's or an allowed web app's fetch(), a WebSocket, a CORS preflight.
            return True
        if fetch_site == _SITE_SAME_SITE:
            # Same scheme and site, another port or subdomain. Addressed as 127.0.0.1, [::1] or
            # localhost (the only hosts allowed by default), that is a page on another port of
            # this machine: a local dev server. The origins allowlist already trusts those on
            # every port (http://127.0.0.1:*, ...), and their fetch() with an Origin passes;
            # their <img> or form passes too while that host on every port is allowed, and is
            # refused when the person narrowed the list (the page's port is not known here).
            return self._origins.allows_every_port(f"http://{_hostname(host)}")
        # cross-site (a page from anywhere else), or a value the spec does not define.
        return False
