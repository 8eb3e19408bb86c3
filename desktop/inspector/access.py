"""Who may read the inspector: the person's own browser tab, opened through a one-time code.

The engine's guard lets in every localhost port and editor web views (their tools call the
proxy), which is not enough for a page full of prompts. So every inspector request but ``open``
must carry the session cookie (the run's random secret; HttpOnly, so no script reads it;
SameSite=Strict, so no other site's page makes the browser send it) *and* be marked by the
browser as made by the inspector page itself (Fetch Metadata ``Sec-Fetch-Site: same-origin``):
cookies are not told apart by port, so a page on another localhost port is same-site and its
``fetch(..., {credentials: "include"})`` would carry the cookie; its requests are marked
``same-site`` and refused here. An Origin, when the browser sends one, must be the page's own.
``Sec-Fetch-Site: none`` (a typed URL, a bookmark) is let through for the page itself only.

The cookie is set by ``open?code=C``: the tray and ``trayproxy inspect`` get a one-time code
(120 s, used once) and hand it to the browser in a 0600 HTML file that redirects (as Jupyter
does), so the code never shows in the process list as a browser's argument would.

``trayproxy inspect`` finds the running TrayProxy in a 0600 session file in the runtime
directory (0700), which holds the port and the secret: any process of the same user can read
it, and so read the inspector, as it can read the config file and its keys.

The directory is a parameter: finding it is OS glue (platforms/instance.py), which this row
does not reach; the controller's caller passes it.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from desktop.atomicfile import write_bytes_atomically
from desktop.engine.addresses import RESERVED_PREFIX, host_port
from desktop.engine.errors import RequestRefused

__all__ = [
    "CODE_LIFETIME_S",
    "COOKIE_NAME",
    "INSPECTOR_PREFIX",
    "MAX_OUTSTANDING_CODES",
    "OPEN_PATH",
    "InspectorAccess",
    "InspectorSession",
    "read_session_file",
    "remove_session_file",
    "write_opener",
    "write_session_file",
]

log = logging.getLogger("trayproxy.inspector")

INSPECTOR_PREFIX = RESERVED_PREFIX + "inspector/"
OPEN_PATH = INSPECTOR_PREFIX + "open"
COOKIE_NAME = "trayproxy_inspector"
OPEN_FROM_TRAY = (
    "The inspector opens from TrayProxy: use Open inspector in the tray menu, or run trayproxy inspect"
)
# 256 random bits, URL-safe (a cookie value needs no quoting then).
SECRET_BYTES = 32
# The per-run segment of the page's path (see InspectorAccess.page_path).
PATH_BYTES = 16
# 192 bits: a code is tried over HTTP, once per request; nobody guesses this in 120 s.
CODE_BYTES = 24
# Long enough for a browser to start cold on a slow machine, short enough that a code read off
# a screen or a leftover opener file is dead soon after.
CODE_LIFETIME_S = 120.0
# Codes waiting to be used: the oldest is dropped beyond this (a person clicks "Open inspector"
# a few times; nothing needs more, and a loop asking for codes cannot grow the list).
MAX_OUTSTANDING_CODES = 16
SESSION_FILE_NAME = "inspector.json"
OPENER_PREFIX = "inspector-open-"
OPENER_SUFFIX = ".html"

_SAME_ORIGIN = "same-origin"
_PERSON = "none"


class InspectorAccess:
    """The run's session secret and its one-time codes. ``issue_code`` may be called from any
    thread (the tray's); the rest runs on the proxy's loop."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secrets.token_urlsafe(SECRET_BYTES)
        # The page lives under a path new each run, and the cookie is scoped to it: browsers send
        # a cookie to every port of the host, so a cookie for /__trayproxy/ would also go to a
        # page another program serves on another port of 127.0.0.1; one scoped to a path that
        # program cannot know goes nowhere but here. (A page the target serves through the proxy
        # shares the page's origin; it cannot know the path either.)
        self.page_path = f"{INSPECTOR_PREFIX}{secrets.token_urlsafe(PATH_BYTES)}/"
        self._clock = clock
        self._codes: dict[str, float] = {}  # code -> when it expires, oldest first
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret
        return f"InspectorAccess(codes={len(self._codes)})"

    @property
    def secret(self) -> str:
        """The cookie's value (for the session file only)."""
        return self._secret

    def issue_code(self) -> str:
        """A new one-time code, good once within CODE_LIFETIME_S."""
        code = secrets.token_urlsafe(CODE_BYTES)
        with self._lock:
            self._forget_expired()
            while len(self._codes) >= MAX_OUTSTANDING_CODES:
                del self._codes[next(iter(self._codes))]
            self._codes[code] = self._clock() + CODE_LIFETIME_S
        return code

    def redeem(self, code: str) -> bool:
        """True, once, for a code issued and not expired."""
        given = code.encode("utf-8", "surrogateescape")
        with self._lock:
            self._forget_expired()
            # Every outstanding code compared in constant time: neither the comparison nor a
            # dict lookup's hashing tells how close a guess came.
            found = None
            for known in self._codes:
                if hmac.compare_digest(known.encode(), given):
                    found = known
            if found is None:
                return False
            del self._codes[found]
            return True

    def _forget_expired(self) -> None:
        now = self._clock()
        for code in [code for code, expires in self._codes.items() if expires <= now]:
            del self._codes[code]

    def has_cookie(self, request: web.BaseRequest) -> bool:
        """True when a Cookie header of ``request`` holds the session cookie. Every value of
        that name counts: a page on another port can set a cookie of the same name for this
        host (cookies ignore ports), which must not hide ours."""
        expected = self._secret.encode()
        matched = False
        for value in _cookie_values(request.headers.getall("Cookie", ())):
            matched |= hmac.compare_digest(value.encode("utf-8", "surrogateescape"), expected)
        return matched

    def check(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The 403 for a request the inspector must not answer, or None when it may."""
        reason = self._refusal(request)
        if reason is None:
            return None
        log.debug("inspector request %s refused: %s", request.raw_path.split("?", 1)[0], reason)
        return refused(reason)

    def _refusal(self, request: web.BaseRequest) -> str | None:
        if not self.has_cookie(request):
            return OPEN_FROM_TRAY
        sites = request.headers.getall("Sec-Fetch-Site", ())
        site = sites[0].strip().lower() if len(sites) == 1 else ""
        if site == _PERSON:
            if not _is_page_navigation(request, self.page_path):
                return "Only the inspector page itself may be opened directly"
        elif site != _SAME_ORIGIN:
            return "Only the inspector page itself may read the inspector"
        origins = request.headers.getall("Origin", ())
        if len(origins) > 1 or (origins and origins[0].strip().lower() != _own_origin(request)):
            return "Only the inspector page itself may read the inspector"
        return None

    def set_cookie(self, response: web.StreamResponse) -> None:
        """Give the browser the session cookie (after a redeemed code)."""
        response.set_cookie(COOKIE_NAME, self._secret, path=self.page_path, httponly=True, samesite="Strict")


def refused(message: str) -> web.Response:
    """The inspector's 403, in the proxy's error shape."""
    response = RequestRefused(message, code="inspector_forbidden", status=403).to_response()
    response.headers["Cache-Control"] = "no-store"
    return response


def _is_page_navigation(request: web.BaseRequest, page_path: str) -> bool:
    """A top-level GET of the page itself (a typed URL or a bookmark, marked ``none``)."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.raw_path.split("?", 1)[0] != page_path:
        return False
    mode = request.headers.get("Sec-Fetch-Mode", "navigate").strip().lower()
    dest = request.headers.get("Sec-Fetch-Dest", "document").strip().lower()
    return mode == "navigate" and dest == "document"


def _own_origin(request: web.BaseRequest) -> str:
    """``http://`` and the Host the request was sent to: the origin of a page served here."""
    return "http://" + request.headers.get("Host", "").strip().lower()


def _cookie_values(headers: Iterable[str]) -> list[str]:
    """The values of every COOKIE_NAME cookie in ``headers`` (RFC 6265 §5.4: ``name=value``
    pairs separated by ``;``)."""
    values = []
    for header in headers:
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name.strip() == COOKIE_NAME:
                values.append(value.strip().strip('"'))
    return values


# The runtime directory's files -------------------------------------------------------------


@dataclass(frozen=True)
class InspectorSession:
    """A running TrayProxy's inspector, as its session file tells: where, and the secret."""

    host: str
    port: int
    secret: str
    pid: int
    path: str  # the page's path this run (InspectorAccess.page_path)

    def __repr__(self) -> str:  # never the secret
        return f"InspectorSession(host={self.host!r}, port={self.port}, pid={self.pid})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (IPv6 hosts bracketed)."""
        return f"http://{host_port(self.host, self.port)}"

    @property
    def page_url(self) -> str:
        return self.base_url + self.path

    def open_url(self, code: str) -> str:
        """The one-time link that gives a browser the cookie and opens the page."""
        return f"{self.base_url}{OPEN_PATH}?code={code}"


def _private_dir(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def write_session_file(directory: Path, host: str, port: int, access: InspectorAccess) -> Path:
    """Tell ``trayproxy inspect`` where the inspector is and its secret: a 0600 file in
    ``directory`` (made 0700), replaced atomically."""
    path = _private_dir(directory) / SESSION_FILE_NAME
    text = json.dumps(
        {"host": host, "port": port, "secret": access.secret, "path": access.page_path, "pid": os.getpid()}
    )
    write_bytes_atomically(path, text.encode(), mode=0o600)
    return path


def read_session_file(directory: Path) -> InspectorSession | None:
    """The session a running TrayProxy wrote, or None (none written, unreadable, malformed)."""
    try:
        data = json.loads((directory / SESSION_FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    host, port, secret, pid, path = (data.get(key) for key in ("host", "port", "secret", "pid", "path"))
    if not (
        isinstance(host, str)
        and isinstance(port, int)
        and isinstance(secret, str)
        and isinstance(pid, int)
        and isinstance(path, str)
        and path.startswith(INSPECTOR_PREFIX)
    ):
        return None
    return InspectorSession(host=host, port=port, secret=secret, pid=pid, path=path)


def remove_session_file(directory: Path, access: InspectorAccess) -> None:
    """Remove the session file if it is still ours (another TrayProxy may have written its
    own since), and the openers left behind."""
    session = read_session_file(directory)
    if session is not None and hmac.compare_digest(session.secret.encode(), access.secret.encode()):
        with contextlib.suppress(OSError):
            (directory / SESSION_FILE_NAME).unlink()
    _remove_openers(directory)


OPENER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0; url={url}">
<title>Opening the TrayProxy inspector</title>
</head>
<body>
<p>Opening the TrayProxy inspector&hellip; If nothing happens, <a href="{url}">open it</a>.</p>
</body>
</html>
"""


def write_opener(directory: Path, url: str) -> Path:
    """A 0600 HTML file in ``directory`` that sends the browser to ``url`` (the one-time link):
    the browser is given the file's path, so the code stays out of the process list. Openers
    left from before are removed."""
    _private_dir(directory)
    _remove_openers(directory)
    page = OPENER_PAGE.format(url=html.escape(url, quote=True))
    name = f"{OPENER_PREFIX}{secrets.token_hex(8)}{OPENER_SUFFIX}"
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def _remove_openers(directory: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.startswith(OPENER_PREFIX) and entry.name.endswith(OPENER_SUFFIX):
                with contextlib.suppress(OSError):
                    entry.unlink()
