"""The local access token check: with ``require_token`` on, only clients that know it get in.

Any program on this machine can reach the listener and spend the keys the proxy adds. With
``[security] require_token``, a client must send the token the proxy generated as its API key,
in whichever header its SDK uses: ``Authorization: Bearer <token>`` (OpenAI-style),
``x-api-key`` (Anthropic), ``api-key`` (Azure) or ``x-goog-api-key`` (Google). The check
compares in constant time and answers 401 in the engine's error shape, with where to find the
token, and never the value.

The client's credential headers then carry the token, so they never go further: the target gets
the key its own headers add, and a target without a key of its own gets no key at all.

A browser cannot set headers on a WebSocket, so there the token may come the way OpenAI's
Realtime API takes a key from a browser: as the subprotocol offer
``openai-insecure-api-key.<token>``. That offer is taken out of the handshake the target gets,
and out of a plain HTTP request that sends it too (a client may offer it anywhere).

A browser's CORS preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
cannot carry the token: the Fetch standard sends preflights without credentials, so refusing it
would fail every cross-origin request of a local web app before its real request (which does
carry the token) is made. Forwarding it is no answer either: the proxy would add the target's
key to a request anyone can send in that shape. So the proxy answers it itself
(:func:`preflight_answer`), allowing what was asked; the guard has already refused origins
that are not allowed (and cross-site requests without one, and two Origin headers), and the
real request still needs the token.

This module holds no file I/O: the controller reads the token file and hands the value over as
a :class:`Secret` in the settings.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import replace

from aiohttp import web

from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.errors import ProxyError, RequestRefused
from desktop.engine.headers import KEY_PROTOCOL_PREFIX, RequestHeaderRules, is_key_offer
from desktop.redaction import CREDENTIAL_HEADERS, register_secrets

__all__ = [
    "KEY_PROTOCOL_PREFIX",
    "LocalTokenCheck",
    "LocalTokenRefused",
    "header_rules",
    "preflight_answer",
]

# Where SDKs put their API key (redaction.CREDENTIAL_HEADERS, the names a target's own key may
# go in too); those but Authorization hold the key alone, with no scheme word before it.
_KEY_HEADERS = tuple(name.encode() for name in sorted(CREDENTIAL_HEADERS - {"authorization"}))
# RFC 9110 §11.6.1: a 401 carries a challenge naming how to authenticate.
CHALLENGE = 'Bearer realm="TrayProxy"'
WHERE_TO_FIND = "Copy it from the tray menu (Copy environment) or run: trayproxy config token"


class LocalTokenRefused(RequestRefused):
    """401: the request lacks this proxy's local access token, or sends another value."""

    status = 401
    error_type = "authentication_error"

    def to_response(self) -> web.Response:
        response = super().to_response()
        response.headers["WWW-Authenticate"] = CHALLENGE
        return response


TOKEN_REQUIRED = (
    "This TrayProxy asks for its local access token as the API key "
    "(Authorization: Bearer, x-api-key, api-key or x-goog-api-key; for a browser WebSocket, "
    f"the subprotocol {KEY_PROTOCOL_PREFIX}<token>). " + WHERE_TO_FIND
)
TOKEN_INVALID = (
    "The API key sent is not this TrayProxy's local access token (it may have been rotated). " + WHERE_TO_FIND
)
TOKEN_UNAVAILABLE = (
    "This TrayProxy asks for a local access token but could not read its token file; "
    "see the log, or run: trayproxy config token"
)


class LocalTokenCheck:
    """Admits a request only when one of its credential headers holds the local token."""

    __slots__ = ("_token",)

    def __init__(self, token: Secret | None) -> None:
        """``token`` None: required but unreadable, so every request is refused."""
        self._token = token.reveal().encode("latin-1") if token is not None else None
        if token is not None:
            register_secrets((token.reveal(),))

    @classmethod
    def for_settings(cls, settings: ProxySettings) -> LocalTokenCheck | None:
        """The check ``settings`` ask for, or None when no token is required."""
        return cls(settings.local_token) if settings.require_token else None

    def check(self, request: web.BaseRequest) -> ProxyError | None:
        """The refusal for ``request``, or None when it carries the token."""
        token = self._token
        if token is None:
            return ProxyError(TOKEN_UNAVAILABLE, code="local_token_unavailable", status=503)
        presented = False
        for value in _credentials(request.raw_headers):
            presented = True
            # Constant time: how long a wrong guess takes says nothing of how close it was.
            if hmac.compare_digest(value, token):
                return None
        if presented:
            return LocalTokenRefused(TOKEN_INVALID, code="local_token_invalid")
        return LocalTokenRefused(TOKEN_REQUIRED, code="local_token_required")


# How long a browser may keep a preflight answer (seconds); browsers cap it (Chromium: 2 h).
PREFLIGHT_MAX_AGE_S = 600


def preflight_answer(request: web.BaseRequest) -> web.Response | None:
    """The proxy's own answer to a CORS preflight (OPTIONS with Origin and
    Access-Control-Request-Method, as the Fetch standard sends it), or None for any other
    request. It allows the origin, method and headers asked for; nothing goes to the target."""
    if request.method != "OPTIONS":
        return None
    headers = request.headers
    origin = headers.get("Origin")
    method = headers.get("Access-Control-Request-Method")
    if origin is None or method is None:
        return None
    answer = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": method,
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    asked_headers = headers.get("Access-Control-Request-Headers")
    if asked_headers:
        answer["Access-Control-Allow-Headers"] = asked_headers
    if headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
        answer["Access-Control-Allow-Private-Network"] = "true"
    return web.Response(status=204, headers=answer)


def _credentials(raw_headers: Iterable[tuple[bytes, bytes]]) -> Iterable[bytes]:
    """The API keys a request offers: each Bearer credential, x-api-key, api-key and
    x-goog-api-key value, and each key subprotocol offer."""
    for name, value in raw_headers:
        lower = name.lower()
        if lower == b"authorization":
            scheme, _, credential = value.strip().partition(b" ")
            # Another scheme (Basic, ...) offers something, just not the token.
            yield credential.strip() if scheme.lower() == b"bearer" else b""
        elif lower in _KEY_HEADERS:
            yield value.strip()
        elif lower == b"sec-websocket-protocol":
            for offer in value.split(b","):
                offer = offer.strip()
                # Latin-1 keeps one character a byte, so the prefix's length holds for both.
                if is_key_offer(offer.decode("latin-1")):
                    yield offer[len(KEY_PROTOCOL_PREFIX) :]


def header_rules(target: Target, *, token_required: bool) -> RequestHeaderRules:
    """The request header rules for ``target``; with the token required, the client's
    credential headers and key subprotocol offers (which hold the token) stop here too,
    whatever the target's ``keep_headers`` say."""
    if not token_required:
        return RequestHeaderRules(target)
    target = replace(
        target,
        strip_headers=target.strip_headers | CREDENTIAL_HEADERS,
        keep_headers=target.keep_headers - CREDENTIAL_HEADERS,
    )
    return RequestHeaderRules(target, drop_key_offers=True)
