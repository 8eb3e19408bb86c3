"""What the guard answers: one function per reason a request is refused, with its status,
error code and the words a person reads (the README's errors table lists the codes).

The guard (guard.py) refuses what it sees in the request head; aiohttp's C parser refuses some
of the same before the guard runs, and server.py answers those with these same codes and words,
so a client sees one answer whichever step refused.
"""

from __future__ import annotations

from desktop.engine.errors import RequestRefused

__all__ = [
    "MAX_CONTENT_LENGTH",
    "ambiguous_origin",
    "bad_host",
    "bad_transfer_encoding",
    "both_framings",
    "browser_favicon",
    "conflicting_lengths",
    "connect_refused",
    "cross_site",
    "invalid_length",
    "speculative_load",
    "unencoded_target",
    "unknown_method",
    "unmarked_browser_request",
]

# The largest Content-Length forwarded: a signed 64-bit size, what most servers can hold (llhttp
# itself takes up to 2^64-1, Python's int any length; a target that overflows reads the body
# another way than we do).
MAX_CONTENT_LENGTH = 2**63 - 1


def both_framings() -> RequestRefused:
    return RequestRefused(
        "The request has both Content-Length and Transfer-Encoding",
        code="ambiguous_framing",
        close_connection=True,
    )


def conflicting_lengths() -> RequestRefused:
    return RequestRefused(
        "The request has more than one Content-Length", code="ambiguous_framing", close_connection=True
    )


def invalid_length() -> RequestRefused:
    return RequestRefused(
        f"The request's Content-Length is not a number of bytes from 0 to {MAX_CONTENT_LENGTH}",
        code="ambiguous_framing",
        close_connection=True,
    )


def bad_transfer_encoding() -> RequestRefused:
    # RFC 9112 §6.1: chunked is the only transfer coding a proxy must know; any other, or a list
    # (gzip, chunked), is framing the two parsers (and a target) may each read differently.
    return RequestRefused(
        "The request's Transfer-Encoding must be exactly chunked (one header, one coding)",
        code="ambiguous_framing",
        close_connection=True,
    )


def unencoded_target() -> RequestRefused:
    # Control characters too (both parsers refuse those themselves, in their own words).
    return RequestRefused(
        "The request target has a character that must be percent-encoded (raw non-ASCII bytes: %C3%A9)",
        code="non_ascii_target",
    )


def connect_refused() -> RequestRefused:
    # CONNECT asks for a tunnel: whatever follows its head is not HTTP to either parser
    # (llhttp hands it over as raw bytes, the pure-Python parser as a body), so nothing after it
    # is read, and the connection closes.
    return RequestRefused(
        "TrayProxy is not a forward proxy: CONNECT (a tunnel) is refused",
        code="connect_refused",
        close_connection=True,
    )


def unknown_method() -> RequestRefused:
    return RequestRefused(
        "TrayProxy forwards only standard HTTP and WebDAV methods (GET, POST, PUT, PATCH, DELETE, ...)",
        code="unknown_method",
    )


def bad_host() -> RequestRefused:
    return RequestRefused("The request needs exactly one non-empty Host header", code="bad_host")


def ambiguous_origin() -> RequestRefused:
    # Browsers never send two: a second one could only be there to have an allowed value ride
    # beside a foreign one, whichever of the two a check happens to read.
    return RequestRefused(
        "The request has more than one Origin or Sec-Fetch-Site header", code="ambiguous_origin"
    )


def browser_favicon() -> RequestRefused:
    # A browser asks for /favicon.ico by itself for every document it shows from the proxy,
    # marked same-origin: also for the 403 a hostile page's popup or link got from the guard,
    # which would have the key added to that request (seen in tests/browser). No LLM API
    # serves one; tools that are not browsers still get it forwarded.
    return RequestRefused(
        "TrayProxy does not pass a browser's own favicon request on to the target",
        code="favicon_not_forwarded",
        status=404,
    )


def speculative_load() -> RequestRefused:
    # Chromium's speculation rules (<script type="speculationrules">, list or document rules,
    # prefetch or prerender, added by a page's script too) load a foreign page's URLs marked
    # Sec-Fetch-Site: none, as if the person had typed them (seen in tests/browser), so the
    # Fetch Metadata check cannot tell them from the person's own. A browser's guess at where
    # the person may go next has no business spending a key: any such load is refused.
    return RequestRefused(
        "TrayProxy does not serve a browser's prefetch or prerender (Sec-Purpose): "
        "speculative loads are not allowed to use the key",
        code="speculative_load_refused",
        status=403,
    )


def service_worker() -> RequestRefused:
    # A browser fetching a service worker's script marks it Service-Worker: script. A worker a
    # page registers on the proxy's origin (a page a target serves through TrayProxy, even in a
    # frame of another site) would see every later request of that origin, the inspector's
    # one-time link and page among them, and could spend the key from the person's browser. An
    # API proxy serves no service worker: none is let in.
    return RequestRefused(
        "TrayProxy does not serve service workers: a page may not install one on its address",
        code="service_worker_refused",
        status=403,
    )


def cross_site() -> RequestRefused:
    return RequestRefused(
        "Requests a web page makes (images, scripts, frames, forms, links) are not allowed to use "
        "TrayProxy; a page whose origin is in the allowed origins may use fetch()",
        code="cross_site_refused",
        status=403,
    )


def unmarked_browser_request() -> RequestRefused:
    return RequestRefused(
        "A browser's request to this host name carries no Fetch Metadata (browsers send it only to "
        "127.0.0.1, localhost and [::1]), so TrayProxy cannot tell a web page's request from yours; "
        "use http://127.0.0.1, or a page whose origin is in the allowed origins",
        code="unmarked_browser_refused",
        status=403,
    )
