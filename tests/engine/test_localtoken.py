"""The local access token at the engine: with it required, only clients that send it get in.

Someone turns on ``[security] require_token`` so that other programs on their machine cannot
spend the keys TrayProxy adds. A client without the token, or with a wrong one, gets 401 in
the error shape its SDK shows, saying where the token is; a client that sends it (as a Bearer
key, ``x-api-key`` or ``api-key``) reaches the target, which sees its real key and never the
token. Targets are real aiohttp servers on 127.0.0.1; "never forwarded" is checked against what
the echo target recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from upstreams import Seen, echo_app

from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.localtoken import LocalTokenCheck
from desktop.redaction import redact_text

TOKEN = "tp-local-Zq3v8mKx0fP1s9TbW2nYcR7uLd4hGe6AjS5oVi-_abc"
REAL_KEY = "sk-real-target-key-0b9d61f4"
# Deadlock guard on every wait, not a timing claim.
WAIT_S = 10.0


def _settings(*, token: str | None = TOKEN, required: bool = True) -> ProxySettings:
    return ProxySettings(
        hosts=("127.0.0.1",),
        port=0,
        stop_grace_s=2.0,
        require_token=required,
        local_token=Secret(token) if token is not None else None,
    )


def _keyed_target(url: str) -> Target:
    return Target(url=url, name="keyed", add_headers=(("Authorization", Secret(f"Bearer {REAL_KEY}")),))


def _header_values(seen: Seen) -> list[str]:
    return [value for request in seen.requests for _, value in request["headers"]]  # type: ignore[union-attr]


@dataclass
class Proxied:
    url: str
    seen: Seen
    service: Any = field(repr=False)

    async def get(
        self, *headers: tuple[str, str], path: str = "/v1/models"
    ) -> tuple[int, dict[str, Any], Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, headers=list(headers)) as response,
        ):
            return response.status, dict(response.headers), await response.json(content_type=None)


@pytest.fixture
async def make_proxied(aiohttp_server, start_proxy):
    async def go(settings: ProxySettings, *, keyed: bool = True) -> Proxied:
        seen = Seen()
        upstream = await aiohttp_server(echo_app(seen))
        url = str(upstream.make_url("")).rstrip("/")
        target = _keyed_target(url) if keyed else Target(url=url, name="keyless")
        proxy = await start_proxy(target, settings=settings)
        return Proxied(url=proxy.url, seen=seen, service=proxy.service)

    return go


async def test_a_request_without_the_token_gets_401_saying_where_to_find_it(make_proxied) -> None:
    """A program that does not know the token is told, in the SDK's error shape, that a token
    is needed and where to get it; nothing reaches the target."""
    proxied = await make_proxied(_settings())
    status, headers, body = await proxied.get()
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="TrayProxy"'
    assert body["error"]["code"] == "local_token_required"
    assert body["error"]["type"] == "authentication_error"
    assert "trayproxy config token" in body["error"]["message"]
    assert "Copy environment" in body["error"]["message"]
    assert proxied.seen.requests == []


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization", "Bearer tp-local-not-the-right-one-123456"),
        ("Authorization", "Basic dXNlcjpwYXNz"),
        ("x-api-key", TOKEN[:-1]),
        ("api-key", TOKEN + "x"),
        ("Authorization", "Bearer"),
    ],
    ids=["wrong-bearer", "basic", "short-x-api-key", "long-api-key", "empty-bearer"],
)
async def test_a_wrong_token_gets_401_without_echoing_it(make_proxied, header: tuple[str, str]) -> None:
    """A stale (rotated) or guessed token is refused with its own code; the answer does not
    repeat what was sent."""
    proxied = await make_proxied(_settings())
    status, _, body = await proxied.get(header)
    assert status == 401
    assert body["error"]["code"] == "local_token_invalid"
    assert header[1].split(" ")[-1] not in body["error"]["message"]
    assert proxied.seen.requests == []


@pytest.mark.parametrize(
    "header",
    [
        ("Authorization", f"Bearer {TOKEN}"),
        ("x-api-key", TOKEN),
        ("api-key", TOKEN),
        ("x-goog-api-key", TOKEN),
        ("AUTHORIZATION", f"bearer  {TOKEN} "),
    ],
    ids=["bearer", "x-api-key", "api-key", "x-goog-api-key", "odd-case-and-spaces"],
)
async def test_the_token_in_any_sdk_header_reaches_the_target_with_its_real_key(
    make_proxied, header: tuple[str, str]
) -> None:
    """OpenAI-style, Anthropic, Azure and Google SDKs each send the token where they send a
    key; the target gets the key configured for it and never sees the token."""
    proxied = await make_proxied(_settings())
    status, _, _ = await proxied.get(header)
    assert status == 200
    (request,) = proxied.seen.requests
    assert ["Authorization", f"Bearer {REAL_KEY}"] in request["headers"]
    assert not any(TOKEN in value for value in _header_values(proxied.seen))
    names = {name.lower() for name, _ in request["headers"]}  # type: ignore[union-attr]
    assert names.isdisjoint({"x-api-key", "api-key", "x-goog-api-key"})


@pytest.mark.parametrize("beside", ["x-api-key", "api-key", "x-goog-api-key"])
async def test_a_target_without_a_key_of_its_own_gets_no_credential(make_proxied, beside: str) -> None:
    """The client's key slot holds the token, so a target with no key configured (a local
    Ollama) gets no credential at all, and certainly not the token: a Gemini client's
    x-goog-api-key holding it was forwarded (an attacker trial)."""
    proxied = await make_proxied(_settings(), keyed=False)
    status, _, _ = await proxied.get(("Authorization", f"Bearer {TOKEN}"), (beside, TOKEN))
    assert status == 200
    (request,) = proxied.seen.requests
    names = {name.lower() for name, _ in request["headers"]}  # type: ignore[union-attr]
    assert names.isdisjoint({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
    assert not any(TOKEN in value for value in _header_values(proxied.seen))


async def test_health_stays_open_without_the_token(make_proxied) -> None:
    """The tray, `trayproxy serve`'s port probe and monitoring can still ask whether it runs."""
    proxied = await make_proxied(_settings())
    status, _, body = await proxied.get(path="/__trayproxy/health")
    assert status == 200
    assert body["app"] == "trayproxy"


async def test_without_require_token_nothing_is_asked_and_client_keys_pass(make_proxied) -> None:
    """Off (the default), a client's own credential still reaches a keyless target."""
    proxied = await make_proxied(_settings(token=None, required=False), keyed=False)
    status, _, _ = await proxied.get(("x-api-key", "client-own-key"))
    assert status == 200
    assert ["x-api-key", "client-own-key"] in proxied.seen.requests[0]["headers"]


async def test_a_token_that_could_not_be_read_refuses_everything(make_proxied) -> None:
    """Required but unreadable (the file could not be made): fail closed with a 503 that says so."""
    proxied = await make_proxied(_settings(token=None))
    status, _, body = await proxied.get(("Authorization", f"Bearer {TOKEN}"))
    assert status == 503
    assert body["error"]["code"] == "local_token_unavailable"
    assert proxied.seen.requests == []


async def test_set_local_token_applies_from_the_next_request(make_proxied) -> None:
    """A reload turns the requirement on and off, and a rotation makes the old token stop
    working at once; the credential stripping follows the requirement."""
    proxied = await make_proxied(_settings(token=None, required=False), keyed=False)
    assert (await proxied.get())[0] == 200

    proxied.service.set_local_token(True, Secret(TOKEN))
    assert (await proxied.get())[0] == 401
    assert (await proxied.get(("x-api-key", TOKEN)))[0] == 200
    assert not any(TOKEN in value for value in _header_values(proxied.seen))

    rotated = "tp-local-rotated-0123456789abcdefghijklmnop"
    proxied.service.set_local_token(True, Secret(rotated))
    status, _, body = await proxied.get(("x-api-key", TOKEN))
    assert (status, body["error"]["code"]) == (401, "local_token_invalid")
    assert (await proxied.get(("x-api-key", rotated)))[0] == 200

    proxied.service.set_local_token(False, None)
    assert (await proxied.get(("x-api-key", "client-own-key")))[0] == 200
    assert ["x-api-key", "client-own-key"] in proxied.seen.requests[-1]["headers"]


# --- WebSockets -----------------------------------------------------------------------------


def _recording_ws_app(
    handshakes: list[list[tuple[str, str]]], *, protocols: tuple[str, ...] = ()
) -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        handshakes.append(list(request.headers.items()))
        ws = web.WebSocketResponse(protocols=protocols)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def _echoes(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str("hello")
    message = await asyncio.wait_for(ws.receive(), WAIT_S)
    assert message.data == "hello"


def _assert_real_key_and_no_token(handshake_headers: list[tuple[str, str]]) -> None:
    """The target's handshake carried the key the proxy adds, and the token nowhere."""
    assert ("Authorization", f"Bearer {REAL_KEY}") in handshake_headers
    assert not any(TOKEN in value for _, value in handshake_headers)


async def test_a_websocket_upgrade_needs_the_token_too(aiohttp_server, start_proxy) -> None:
    """A realtime client without the token gets a plain 401 instead of the 101; with it the
    socket works and the target's handshake carries its real key, not the token."""
    handshakes: list[list[tuple[str, str]]] = []
    upstream = await aiohttp_server(_recording_ws_app(handshakes))
    proxy = await start_proxy(_keyed_target(str(upstream.make_url("")).rstrip("/")), settings=_settings())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(proxy.url + "/ws")
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
            await session.ws_connect(proxy.url + "/ws", headers={"Authorization": "Bearer nope-nope-nope"})
        assert wrong.value.status == 401
        assert handshakes == []

        async with session.ws_connect(proxy.url + "/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await _echoes(ws)
    (headers,) = handshakes
    _assert_real_key_and_no_token(headers)


async def test_a_browser_websocket_may_send_the_token_as_a_realtime_key_subprotocol(
    aiohttp_server, start_proxy
) -> None:
    """A browser cannot set headers on a WebSocket; like OpenAI's Realtime API, TrayProxy takes
    the key from the subprotocol offer ``openai-insecure-api-key.<token>``. The socket works,
    the target's handshake has its real key and the other offers but never the token, and the
    client gets the subprotocol the target chose. A wrong token in that offer gets 401."""
    handshakes: list[list[tuple[str, str]]] = []
    upstream = await aiohttp_server(_recording_ws_app(handshakes, protocols=("realtime",)))
    proxy = await start_proxy(_keyed_target(str(upstream.make_url("")).rstrip("/")), settings=_settings())
    browser_offers = ("realtime", f"openai-insecure-api-key.{TOKEN}", "openai-beta.realtime-v1")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
            await session.ws_connect(proxy.url + "/ws", protocols=("realtime", "openai-insecure-api-key.nope-nope"))
        assert wrong.value.status == 401
        assert handshakes == []
        async with session.ws_connect(proxy.url + "/ws", protocols=browser_offers) as ws:
            assert ws.protocol == "realtime"
            await _echoes(ws)
    (headers,) = handshakes
    _assert_real_key_and_no_token(headers)
    offered = [
        offer.strip()
        for name, value in headers
        if name.lower() == "sec-websocket-protocol"
        for offer in value.split(",")
    ]
    assert offered == ["realtime", "openai-beta.realtime-v1"]


async def test_a_key_subprotocol_offer_on_a_plain_request_does_not_reach_the_target(make_proxied) -> None:
    """The realtime key offer ``openai-insecure-api-key.<token>`` is accepted as the token on a
    plain HTTP request too; there, as on a WebSocket, the target never gets it (the other
    offers pass), whether the token came in that offer alone or beside a header."""
    proxied = await make_proxied(_settings())
    offers = ("Sec-WebSocket-Protocol", f"realtime, openai-insecure-api-key.{TOKEN}")
    assert (await proxied.get(offers))[0] == 200
    assert (await proxied.get(("Authorization", f"Bearer {TOKEN}"), offers))[0] == 200
    only_offer = ("Sec-WebSocket-Protocol", f"openai-insecure-api-key.{TOKEN}")
    assert (await proxied.get(only_offer))[0] == 200
    other_case = ("Sec-WebSocket-Protocol", f"realtime, OpenAI-Insecure-Api-Key.{TOKEN}")
    assert (await proxied.get(other_case))[0] == 200
    assert not any(TOKEN in value for value in _header_values(proxied.seen))
    protocols = [
        [value for name, value in request["headers"] if name.lower() == "sec-websocket-protocol"]  # type: ignore[union-attr]
        for request in proxied.seen.requests
    ]
    assert protocols == [["realtime"], ["realtime"], [], ["realtime"]]


async def test_keep_headers_cannot_let_the_token_through(aiohttp_server, start_proxy) -> None:
    """A target that keeps the client's Authorization still never gets it while the token is
    required: the client's credential headers hold the token."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    target = Target(
        url=str(upstream.make_url("")).rstrip("/"),
        name="keeps",
        add_headers=(("x-api-key", Secret(REAL_KEY)),),
        keep_headers=frozenset({"authorization"}),
    )
    proxy = await start_proxy(target, settings=_settings())
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.url + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        assert response.status == 200
    (request,) = seen.requests
    assert ["x-api-key", REAL_KEY] in request["headers"]
    assert not any(TOKEN in value for value in _header_values(seen))


# --- the check and the redaction ------------------------------------------------------------


def test_the_check_object_is_built_only_when_a_token_is_required() -> None:
    """Off, the request path pays one `is None` test and nothing else."""
    assert LocalTokenCheck.for_settings(ProxySettings()) is None
    assert LocalTokenCheck.for_settings(_settings()) is not None


def test_a_local_token_never_appears_in_a_redacted_line() -> None:
    """Any token of TrayProxy's shape is masked in a log line, even one this process never
    registered (rotated by another process), wherever in the line it sits."""
    other = "tp-local-AbC_dEf-0123456789xyzXYZ0123456789abcdefghi"
    for line in (
        f"client sent x-api-key {other} and failed",
        f"token={other}",
        f"Authorization: Bearer {other}",
        f"'api-key': '{other}'",
    ):
        assert other not in redact_text(line)
        assert other[len("tp-local-") :] not in redact_text(line)


async def test_browser_preflight_is_answered_without_the_token_and_without_the_target(make_proxied) -> None:
    """A local web app's cross-origin request starts with a preflight that browsers send without
    credentials; TrayProxy answers it itself, allowing what was asked, instead of a 401. It
    never goes to the target: forwarded, it would be a request anyone could send in that shape
    to have the target's key added (a body and all). The real request still needs the token."""
    proxied = await make_proxied(_settings())
    preflight = [
        ("Origin", "http://localhost:5173"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, content-type"),
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            proxied.url + "/v1/chat/completions", headers=preflight, data=b'{"model": "x"}'
        ) as response,
    ):
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert REAL_KEY not in str(response.headers) + await response.text()
    assert proxied.seen.requests == []
    status, _, body = await proxied.get(("Origin", "http://localhost:5173"))
    assert status == 401
    assert body["error"]["code"] == "local_token_required"


async def test_preflight_from_a_foreign_page_is_still_refused(make_proxied) -> None:
    """The preflight answer allows only what the origin rules allow: a page from elsewhere gets
    the guard's 403, as its real request would."""
    proxied = await make_proxied(_settings())
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            proxied.url + "/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        ) as response,
    ):
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    assert proxied.seen.requests == []


async def test_options_that_is_not_a_preflight_still_needs_the_token(make_proxied) -> None:
    """Only a preflight's shape (Origin and Access-Control-Request-Method) gets through: a bare
    OPTIONS from a program is checked like any other request."""
    proxied = await make_proxied(_settings())
    async with (
        aiohttp.ClientSession() as session,
        session.options(proxied.url + "/v1/models", headers={"Access-Control-Request-Method": "GET"}) as response,
    ):
        assert response.status == 401
    assert proxied.seen.requests == []


@pytest.mark.parametrize("ws_path", ["relay", "bridge"], indirect=True)
@pytest.mark.parametrize(
    "placeholder",
    ["openai-insecure-api-key.unused", "OpenAI-Insecure-Api-Key.placeholder", "OPENAI-INSECURE-API-KEY.x"],
    ids=["as-openai-spells-it", "mixed-case", "upper-case"],
)
async def test_a_placeholder_key_offer_never_reaches_a_target_that_adds_its_own_key(
    aiohttp_server, start_proxy, ws_path: str, placeholder: str
) -> None:
    """Without the local token too: a browser Realtime client offers its placeholder key as
    ``openai-insecure-api-key.unused``; a target that adds its own Authorization gets its real
    key and the other offers, never the placeholder (which the service could read instead of
    the key), on the WebSocket and on a plain request, in whatever letter case it is offered
    (an attacker trial's ``OpenAI-Insecure-Api-Key.placeholder`` got through). A target adding
    no key gets every offer."""
    handshakes: list[list[tuple[str, str]]] = []
    upstream = await aiohttp_server(_recording_ws_app(handshakes, protocols=("realtime",)))
    upstream_url = str(upstream.make_url("")).rstrip("/")
    offers = ("realtime", placeholder, "openai-beta.realtime-v1")
    keyed = await start_proxy(_keyed_target(upstream_url), settings=_settings(required=False))
    keyless = await start_proxy(Target(url=upstream_url, name="keyless"), settings=_settings(required=False))
    async with aiohttp.ClientSession() as session:
        for proxy in (keyed, keyless):
            async with session.ws_connect(proxy.url + "/ws", protocols=offers) as ws:
                assert ws.protocol == "realtime"
                await _echoes(ws)

    def offered(headers: list[tuple[str, str]]) -> list[str]:
        return [
            offer.strip()
            for name, value in headers
            if name.lower() == "sec-websocket-protocol"
            for offer in value.split(",")
        ]

    keyed_headers, keyless_headers = handshakes
    assert ("Authorization", f"Bearer {REAL_KEY}") in keyed_headers
    assert offered(keyed_headers) == ["realtime", "openai-beta.realtime-v1"]
    assert offered(keyless_headers) == list(offers)

    plain = await make_plain_request(aiohttp_server, start_proxy, ", ".join(offers))
    assert plain == ["realtime, openai-beta.realtime-v1"]


async def make_plain_request(aiohttp_server, start_proxy, offer_header: str) -> list[str]:
    """The Sec-WebSocket-Protocol values a key-adding target saw on one plain GET."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(
        _keyed_target(str(upstream.make_url("")).rstrip("/")), settings=_settings(required=False)
    )
    async with aiohttp.ClientSession() as session, session.get(
        proxy.url + "/v1/models", headers={"Sec-WebSocket-Protocol": offer_header}
    ) as response:
        assert response.status == 200
    (request,) = seen.requests
    return [value for name, value in request["headers"] if name.lower() == "sec-websocket-protocol"]  # type: ignore[union-attr]
