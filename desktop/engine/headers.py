"""Header rules: what crosses the proxy in each direction, and what the proxy adds.

End-to-end headers pass unchanged, in their original case and order, duplicates kept.
Hop-by-hop headers belong to one connection and stop here (RFC 9110 §7.6.1), as does every
header the peer named in its Connection header. Requests get the target's Host, the
X-Forwarded-* trio and the target's configured headers; nothing else is added. Responses get
nothing added at all, and a Location that points into the target is pointed back at us.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

from desktop.config.model import Target
from desktop.redaction import CREDENTIAL_HEADERS

__all__ = [
    "HOP_BY_HOP",
    "KEY_PROTOCOL_PREFIX",
    "RawHeaders",
    "RequestHeaderRules",
    "connection_tokens",
    "is_key_offer",
    "is_websocket_upgrade",
    "response_headers",
    "without_key_offers",
]

RawHeaders = tuple[tuple[bytes, bytes], ...]

# A Sec-WebSocket-Protocol offer carrying an API key (OpenAI Realtime's way for browsers, which
# cannot set headers on a WebSocket): a credential like Authorization, in another place. Known
# in any letter case: a target may read the offer case-insensitively, and a key offered as
# "OpenAI-Insecure-Api-Key.<key>" is a key all the same.
KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."


def is_key_offer(offer: str) -> bool:
    """True for a subprotocol offer (stripped) that carries an API key, in any letter case."""
    return offer[: len(KEY_PROTOCOL_PREFIX)].lower() == KEY_PROTOCOL_PREFIX


def without_key_offers(offers: Iterable[str]) -> list[str]:
    """Subprotocol offers (as split from Sec-WebSocket-Protocol), stripped, without the empty
    ones and those that carry an API key."""
    return [offer for offer in (o.strip() for o in offers) if offer and not is_key_offer(offer)]

# RFC 9110 §7.6.1 (and its predecessors): meaningful for one connection only. Upgrade is
# handled apart: the WebSocket bridge makes its own handshake on each side.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
# The client's WebSocket handshake headers: the upstream handshake makes its own.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Not forwarded: the request's Host is replaced, and the proxy answers Expect: 100-continue
# itself when the upload starts (as nginx does) rather than make the target's wait ours.
_REPLACED_REQUEST_HEADERS = frozenset({"host", "expect"})


# Header names as text and lower-cased, by their bytes. A proxy sees the same few dozen names
# over and over, so each is decoded once. Bounded: clients choose names, and a flood of new
# ones must not grow memory (past the bound, names are decoded each time as before).
_NAMES: dict[bytes, tuple[str, str]] = {}
_NAMES_MAX = 2048
# Connection header values seen on nearly every message, parsed once.
_COMMON_CONNECTION = {
    value: frozenset(t.strip().decode("latin-1").lower() for t in value.split(b","))
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


def _name(raw: bytes) -> tuple[str, str]:
    """``raw`` as text and lower-cased, from the cache when it has been seen."""
    known = _NAMES.get(raw)
    if known is None:
        text = raw.decode("latin-1")
        known = (text, text.lower())
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[raw] = known
    return known


def _tokens(value: bytes) -> frozenset[str]:
    """Lower-case names listed in one Connection header value."""
    common = _COMMON_CONNECTION.get(value)
    if common is not None:
        return common
    return frozenset(
        token.decode("latin-1").lower() for token in (t.strip() for t in value.split(b",")) if token
    )


def connection_tokens(raw_headers: RawHeaders) -> frozenset[str]:
    """Lower-case names listed in every Connection header (RFC 9110 §7.6.1)."""
    tokens: frozenset[str] = frozenset()
    for name, value in raw_headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens = tokens | _tokens(value)
    return tokens


def is_websocket_upgrade(raw_headers: RawHeaders) -> bool:
    """True for a WebSocket opening handshake (a fairly naive check, like most proxies')."""
    upgrade = b""
    for name, value in raw_headers:
        if len(name) == 7 and name.lower() == b"upgrade":
            upgrade = value
    if b"websocket" not in upgrade.lower():
        return False
    return "upgrade" in connection_tokens(raw_headers)


class RequestHeaderRules:
    """How one target rewrites request headers; built once per target, applied per request."""

    __slots__ = ("_add", "_drop", "_drops_key_offers", "_host", "_keep_host")

    def __init__(self, target: Target, *, drop_key_offers: bool = False) -> None:
        """``drop_key_offers``: Sec-WebSocket-Protocol offers carrying a key are taken out of
        plain (non-WebSocket) requests; they are also when the target adds its own
        Authorization."""
        self._add = tuple((name, value.reveal()) for name, value in target.add_headers)
        added = {name.lower() for name, _ in self._add}
        # A target that adds its own credential gets no other from the client (see
        # CREDENTIAL_HEADERS), unless it keeps one by name (a gateway that reads the user's
        # token beside the team key).
        credentials = CREDENTIAL_HEADERS - target.keep_headers if added & CREDENTIAL_HEADERS else frozenset()
        self._drop = (
            HOP_BY_HOP
            | _REPLACED_REQUEST_HEADERS
            | {name.lower() for name in target.strip_headers}
            | added
            | credentials
            | {"x-forwarded-proto", "x-forwarded-host"}
        )
        # The client's key offers are credentials too: a target adding its own Authorization
        # would get the client's placeholder key offered beside it.
        self._drops_key_offers = drop_key_offers or "authorization" in credentials
        self._host = target.origin.split("://", 1)[1]
        self._keep_host = target.keep_host

    def apply(
        self,
        raw_headers: RawHeaders,
        *,
        client_ip: str,
        websocket: bool = False,
    ) -> CIMultiDict[str]:
        """Return the headers to send upstream for a request that arrived with ``raw_headers``."""
        drop = self._drop | WEBSOCKET_HANDSHAKE if websocket else self._drop
        out: CIMultiDict[str] = CIMultiDict()
        client_host = ""
        forwarded_for = ""
        listed: frozenset[str] = frozenset()
        # aiohttp's client keeps only the last of duplicates spelled in different case
        # (its seen-names set is case-sensitive), so repeats take the first one's spelling.
        spelling: dict[str, str] = {}
        names = _NAMES
        for raw_name, raw_value in raw_headers:
            name, lower = names.get(raw_name) or _name(raw_name)
            name = spelling.setdefault(lower, name)
            if lower == "host":
                client_host = raw_value.decode("latin-1")
            elif lower == "x-forwarded-for":
                value = raw_value.decode("latin-1")
                forwarded_for = f"{forwarded_for}, {value}" if forwarded_for else value
                continue
            elif lower == "connection":
                listed = listed | _tokens(raw_value)
            elif lower == "sec-websocket-protocol" and self._drops_key_offers and not websocket:
                kept = ", ".join(without_key_offers(raw_value.decode("latin-1").split(",")))
                if kept:
                    out.add(name, kept)
                continue
            if lower in drop:
                continue
            out.add(name, raw_value.decode("latin-1"))
        # Headers the client named in Connection are hop-by-hop too (RFC 9110 §7.6.1); known
        # only once all are read, they are taken out afterwards (rarely any beyond the usual).
        for token in listed - drop:
            out.popall(token, None)
        # aiohttp sends the URL's host as Host unless one is given; give it only to keep the
        # client's (a gateway that routes on virtual hosts).
        if self._keep_host and client_host:
            out["Host"] = client_host
        for name, value in self._add:
            out[name] = value
        out["X-Forwarded-For"] = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
        out["X-Forwarded-Proto"] = "http"
        if client_host:
            out["X-Forwarded-Host"] = client_host
        return out

    @property
    def drops_key_offers(self) -> bool:
        """Whether the client's ``openai-insecure-api-key.`` subprotocol offers stop here."""
        return self._drops_key_offers

    @property
    def host(self) -> str:
        """The Host the target is addressed by."""
        return self._host


def response_headers(
    raw_headers: RawHeaders,
    *,
    target_prefix: str,
    base_path: str,
    local_base: str,
    local_prefix: str = "",
) -> CIMultiDict[str]:
    """Headers for the client: the target's, minus hop-by-hop, with Location pointed at us.

    ``target_prefix`` is the target's origin plus base path; ``local_base`` is
    ``http://<Host the client used>``; ``local_prefix`` the route prefix the request came
    under (``/anthropic``), "" for none.
    """
    out: CIMultiDict[str] = CIMultiDict()
    listed: frozenset[str] = frozenset()
    names = _NAMES
    for raw_name, raw_value in raw_headers:
        name, lower = names.get(raw_name) or _name(raw_name)
        if lower in HOP_BY_HOP:
            if lower == "connection":
                listed = listed | _tokens(raw_value)
            continue
        value = raw_value.decode("latin-1")
        if lower == "location":
            value = rewrite_location(
                value,
                target_prefix=target_prefix,
                base_path=base_path,
                local_base=local_base,
                local_prefix=local_prefix,
            )
        out.add(name, value)
    # Headers the target named in Connection are hop-by-hop too; known only once all are read.
    for token in listed - HOP_BY_HOP:
        out.popall(token, None)
    return out


def rewrite_location(
    value: str, *, target_prefix: str, base_path: str, local_base: str, local_prefix: str = ""
) -> str:
    """Point a redirect into the target at the same place behind the proxy.

    ``https://target/base/x`` and ``/base/x`` become ``http://127.0.0.1:8000/x``, or
    ``http://127.0.0.1:8000/anthropic/x`` and ``/anthropic/x`` for a request that came under the
    route prefix ``local_prefix`` ``/anthropic``; anything else (another host, a relative path
    outside the base) is left alone.
    """
    if value.lower().startswith(target_prefix.lower()):
        rest = value[len(target_prefix) :]
        if rest == "" or rest[0] in "/?#":
            return local_base + local_prefix + (rest if rest.startswith("/") else "/" + rest)
    if base_path and value.startswith(base_path):
        rest = value[len(base_path) :]
        if rest == "" or rest[0] in "/?#":
            return local_prefix + (rest if rest.startswith("/") else "/" + rest)
    elif local_prefix and value.startswith("/") and not value.startswith("//"):
        # A path on the target's origin (which has no base path) is under the prefix here.
        return local_prefix + value
    return value
