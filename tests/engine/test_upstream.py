"""The proxy's side of the upstream connection: pooling, dead pooled connections, TLS trust and
proxies from the environment (issue 3, item 5).

Every upstream is a real server on 127.0.0.1; host names other than 127.0.0.1 are answered by a
resolver handed to the proxy, so no DNS query leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from netservers import ConnectTunnel, KeepAliveServer, LocalCA, LoopbackResolver
from upstreams import Seen, dead_port, echo_app
from yarl import URL

from desktop.engine import upstream as upstream_module
from desktop.engine import websocket

PEERS = web.AppKey("peers", list)

CHAT_BODY = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
# uvicorn's default keep-alive (vLLM, most Python model servers); other common servers keep
# idle connections as long or longer (Node 5 s, nginx 75 s).
COMMON_SERVER_KEEPALIVE_S = 5.0


# A name that is not this machine's, so the environment's proxy applies to it (loopback targets
# always go direct); the proxy doubles reach 127.0.0.1 whatever the name, and a direct
# connection to it goes through the LoopbackResolver: no DNS query leaves the machine.
REMOTE = "target.test"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # A proxy that never answers fails the test in seconds rather than hanging it.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def keepalive_server() -> AsyncIterator[KeepAliveServer]:
    server = KeepAliveServer()
    await server.start()
    yield server
    await server.close()


def peer_recording_app() -> web.Application:
    """Answers 200 and records the (host, port) of the connection each request came on."""

    async def handler(request: web.Request) -> web.Response:
        request.app[PEERS].append(request.transport.get_extra_info("peername")[:2])
        return web.Response(text="ok")

    app = web.Application()
    app[PEERS] = []
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def forward_proxy() -> AsyncIterator[KeepAliveServer]:
    """An HTTP_PROXY double: a raw server that records each request line byte for byte (an
    absolute-form target when used as a proxy) and answers it itself."""
    server = KeepAliveServer()
    await server.start()
    yield server
    await server.close()


# --- connection pool -------------------------------------------------------------------------


async def test_sequential_requests_share_one_upstream_connection(aiohttp_server, start_proxy, client) -> None:
    """Back-to-back requests do not pay a new TCP (and TLS) handshake each: the proxy keeps
    one pooled connection to the target open and reuses it."""
    upstream = await aiohttp_server(peer_recording_app())
    proxy = await start_proxy(str(upstream.make_url("/")))
    for _ in range(3):
        async with client.get(proxy.url + "/v1/models") as response:
            assert response.status == 200
            await response.read()
    peers = upstream.app[PEERS]
    assert len(peers) == 3
    assert len(set(peers)) == 1, f"each request opened its own upstream connection: {peers}"


def test_idle_keepalive_is_shorter_than_common_server_timeouts() -> None:
    """The proxy drops idle pooled connections before a uvicorn-style server (5 s) would, so it
    does not send a request down a connection the server is closing."""
    assert 0 < upstream_module.IDLE_KEEPALIVE_S < COMMON_SERVER_KEEPALIVE_S


async def test_connection_idle_almost_as_long_as_server_keepalive_is_not_reused(
    start_proxy, client, keepalive_server
) -> None:
    """A connection that sat idle for nearly a uvicorn-style server's 5 s keep-alive is not
    used again (the server may be closing it right now); the next request opens a new one."""
    proxy = await start_proxy(keepalive_server.url)
    async with client.get(proxy.url + "/a") as response:
        assert response.status == 200
    await asyncio.sleep(COMMON_SERVER_KEEPALIVE_S - 0.4)
    async with client.get(proxy.url + "/b") as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["connection"] == 2
    assert answer["nth"] == 1
    assert [hit.connection for hit in keepalive_server.hits] == [1, 2]


# --- dead pooled connections -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_request_on_dead_pooled_connection_is_retried_on_a_fresh_one(
    start_proxy, client, keepalive_server, method: str, how: str
) -> None:
    """After the laptop slept or the target dropped an idle connection, the next request
    still succeeds: the pooled connection fails before any answer, so the proxy sends the
    request again, with the same body, on a new connection."""
    proxy = await start_proxy(keepalive_server.url)
    async with client.get(proxy.url + "/warm-up") as response:
        assert response.status == 200
    keepalive_server.mode = "drop_reused"
    keepalive_server.how = how
    kwargs = {"json": CHAT_BODY} if method == "POST" else {}
    async with client.request(method, proxy.url + "/v1/chat/completions", **kwargs) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["connection"] == 2
    if method == "POST":
        assert json.loads(answer["body"]) == CHAT_BODY
    attempts = [(hit.connection, hit.nth, hit.answered) for hit in keepalive_server.hits[1:]]
    assert attempts == [(1, 2, False), (2, 1, True)]


@pytest.mark.parametrize("ws_path", ["relay", "bridge"] if websocket.RAW_RELAY else ["bridge"], indirect=True)
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_websocket_handshake_on_dead_pooled_connection_is_retried_on_a_fresh_one(
    start_proxy, client, keepalive_server, how: str
) -> None:
    """A WebSocket opened after the pooled connection died gets the same second chance as a
    request: its handshake goes again on a new connection instead of the tool getting a 502
    "disconnected". (This server answers 200 rather than 101, so the tool is told the upgrade
    was refused, by the handshake on the fresh connection.)"""
    proxy = await start_proxy(keepalive_server.url)
    async with client.get(proxy.url + "/warm-up") as response:
        assert response.status == 200
    keepalive_server.mode = "drop_reused"
    keepalive_server.how = how
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(proxy.url + "/ws")
    assert refused.value.status == 502
    attempts = [(hit.connection, hit.nth, hit.target) for hit in keepalive_server.hits[1:]]
    assert attempts == [(1, 2, "/ws"), (2, 1, "/ws")]


async def test_connection_closed_by_target_while_idle_is_not_used(
    start_proxy, client, keepalive_server
) -> None:
    """A target that quietly closes each connection after answering (no Connection: close)
    still gets every request: a connection known to be closed is never picked from the pool."""
    keepalive_server.close_after_answer = True
    proxy = await start_proxy(keepalive_server.url)
    for expected_connection in (1, 2, 3):
        async with client.post(proxy.url + "/v1/embeddings", json=CHAT_BODY) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["connection"] == expected_connection
        # Let the close reach the proxy's side of the connection.
        await asyncio.sleep(0.05)


async def test_all_dead_pooled_connections_do_not_fail_the_first_request_after_sleep(
    start_proxy, client, keepalive_server
) -> None:
    """After sleep or a network change every pooled connection is dead, not just one. A tool
    that had made two requests at once (two pooled connections) must still get an answer to
    its next request: the retry must not land on the second dead pooled connection."""
    keepalive_server.answer_after = 2  # hold both answers until both requests are in
    proxy = await start_proxy(keepalive_server.url)

    async def get(path: str) -> int:
        async with client.get(proxy.url + path) as response:
            await response.read()
            return response.status

    assert await asyncio.gather(get("/one"), get("/two")) == [200, 200]
    assert keepalive_server.connections == 2
    keepalive_server.answer_after = 0
    keepalive_server.mode = "drop_reused"
    async with client.post(proxy.url + "/v1/chat/completions", json=CHAT_BODY) as response:
        body = await response.text()
    attempts = [(hit.connection, hit.nth, hit.answered) for hit in keepalive_server.hits[2:]]
    assert response.status == 200, f"{body}; attempts (connection, nth, answered): {attempts}"


async def test_streamed_upload_on_dead_pooled_connection_is_not_sent_twice(
    start_proxy, client, keepalive_server
) -> None:
    """An upload of unknown length is streamed through as it arrives, so it cannot be sent
    again: when its pooled connection turns out dead the client gets a 502 it can retry,
    and the target never sees a second, truncated copy."""
    proxy = await start_proxy(keepalive_server.url)
    async with client.get(proxy.url + "/warm-up") as response:
        assert response.status == 200
    keepalive_server.mode = "drop_reused"

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 16384

    async with client.post(proxy.url + "/v1/files", data=upload()) as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["code"]
    attempts = [(hit.connection, hit.nth) for hit in keepalive_server.hits[1:]]
    assert attempts == [(1, 2)], f"the streamed upload was sent again: {attempts}"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_retry_happens_once(start_proxy, client, keepalive_server, method: str) -> None:
    """A target that drops every request gets the request twice at most (the pooled attempt
    and one on a fresh connection), then the client gets a 502 instead of more copies."""
    proxy = await start_proxy(keepalive_server.url)
    async with client.get(proxy.url + "/warm-up") as response:
        assert response.status == 200
    keepalive_server.mode = "drop_all"
    kwargs = {"json": CHAT_BODY} if method == "POST" else {}
    async with client.request(method, proxy.url + "/v1/chat/completions", **kwargs) as response:
        assert response.status == 502
        assert (await response.json())["error"]["code"] == "upstream_disconnected"
    attempts = [(hit.connection, hit.nth) for hit in keepalive_server.hits[1:]]
    assert attempts == [(1, 2), (2, 1)], f"sent {len(attempts)} times: {attempts}"


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def local_ca(tmp_path: Path) -> LocalCA:
    return LocalCA.issue(tmp_path, "localhost", REMOTE)


async def _https_echo(aiohttp_server, local_ca: LocalCA, seen: Seen):
    return await aiohttp_server(echo_app(seen), ssl=local_ca.server_context())


async def test_https_target_with_custom_ca_bundle_is_trusted(
    aiohttp_server, start_proxy, client, local_ca
) -> None:
    """A target whose certificate comes from a private CA works once that CA's bundle is
    configured; the TLS handshake names the target's host (SNI) and Host says the same."""
    seen = Seen()
    upstream = await _https_echo(aiohttp_server, local_ca, seen)
    resolver = LoopbackResolver()
    proxy = await start_proxy(
        f"https://localhost:{upstream.port}", resolver=resolver, ca_bundle=str(local_ca.ca_path)
    )
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert local_ca.sni == ["localhost"]
    assert dict((k.lower(), v) for k, v in answer["headers"])["host"] == f"localhost:{upstream.port}"
    assert resolver.asked == ["localhost"]


async def test_https_target_without_verification_is_reached(
    aiohttp_server, start_proxy, client, local_ca
) -> None:
    """With verify_tls off, a target with a certificate no one trusts is still reached."""
    seen = Seen()
    upstream = await _https_echo(aiohttp_server, local_ca, seen)
    proxy = await start_proxy(
        f"https://localhost:{upstream.port}", resolver=LoopbackResolver(), verify_tls=False
    )
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
    assert len(seen.requests) == 1


async def test_https_target_is_verified_by_default(aiohttp_server, start_proxy, client, local_ca) -> None:
    """With no CA bundle configured, a certificate from an unknown CA is refused: the default
    trust store is a real one, not "accept anything"."""
    seen = Seen()
    upstream = await _https_echo(aiohttp_server, local_ca, seen)
    proxy = await start_proxy(f"https://localhost:{upstream.port}", resolver=LoopbackResolver())
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 502
    assert seen.requests == []


# --- proxies from the environment ------------------------------------------------------------


async def test_http_proxy_from_environment_carries_requests(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """On a network that needs an HTTP proxy, HTTP_PROXY is honoured: the request goes to the
    proxy in absolute form with its target bytes intact, and the proxy's answer comes back."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    proxy = await start_proxy(f"http://{REMOTE}:{upstream.port}/base")
    async with client.get(URL(proxy.url + "/v1/a%2Fb?x=%2F&y=a+b", encoded=True)) as response:
        assert response.status == 200
        assert (await response.json())["connection"] == 1
    assert [(hit.method, hit.target) for hit in forward_proxy.hits] == [
        ("GET", f"http://{REMOTE}:{upstream.port}/base/v1/a%2Fb?x=%2F&y=a+b")
    ]
    assert forward_proxy.hits[0].headers["host"] == f"{REMOTE}:{upstream.port}"
    assert seen.requests == []


async def test_proxy_credentials_in_http_proxy_go_to_the_proxy(
    start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """``HTTP_PROXY=http://user:pass@host`` authenticates to the proxy with Basic auth, and
    the credentials are not sent as the target's Authorization."""
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url.replace("http://", "http://alice:s3cret@"))
    proxy = await start_proxy(f"http://{REMOTE}:{dead_port()}/")
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
    headers = forward_proxy.hits[0].headers
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert "authorization" not in headers


@pytest.mark.parametrize("no_proxy", [REMOTE, "*", "localhost,.test"])
async def test_no_proxy_sends_requests_direct(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy, no_proxy: str
) -> None:
    """A target listed in NO_PROXY is reached directly even when HTTP_PROXY is set."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    proxy = await start_proxy(f"http://{REMOTE}:{upstream.port}/", resolver=LoopbackResolver())
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == "/v1/models"
    assert forward_proxy.hits == []
    assert len(seen.requests) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_target_goes_direct_whatever_http_proxy_says(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy, host: str
) -> None:
    """A corporate HTTP_PROXY cannot reach this machine's loopback: a local Ollama or vLLM is
    reached directly even with HTTP_PROXY set and no NO_PROXY (as Go's net/http does)."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen), host="::" if host == "[::1]" else "127.0.0.1")
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy = await start_proxy(f"http://{host}:{upstream.port}/", resolver=LoopbackResolver())
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
    assert forward_proxy.hits == []
    assert len(seen.requests) == 1


async def test_proxy_set_after_start_is_not_picked_up(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """Proxy settings are read once when the target is opened, not per request: changing the
    environment of a running proxy does not reroute it."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(f"http://{REMOTE}:{upstream.port}/", resolver=LoopbackResolver())
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
    assert forward_proxy.hits == []
    assert len(seen.requests) == 1


async def test_proxy_removed_after_start_is_still_used(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """The other way round: unsetting HTTP_PROXY (and adding NO_PROXY) after start changes
    nothing either; the route chosen at start holds."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    proxy = await start_proxy(f"http://{REMOTE}:{upstream.port}/")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("NO_PROXY", "*")
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
    assert len(forward_proxy.hits) == 1
    assert seen.requests == []


@pytest.fixture
async def tunnel() -> AsyncIterator[ConnectTunnel]:
    """An HTTPS_PROXY double that answers CONNECT and tunnels to 127.0.0.1."""
    server = ConnectTunnel()
    await server.start()
    yield server
    await server.close()


async def test_https_proxy_from_environment_tunnels_to_https_target(
    aiohttp_server, start_proxy, client, monkeypatch, local_ca, tunnel
) -> None:
    """HTTPS_PROXY is used for an https target with CONNECT, and TLS is still verified end to
    end against the target's own name through the tunnel."""
    seen = Seen()
    upstream = await _https_echo(aiohttp_server, local_ca, seen)
    monkeypatch.setenv("HTTPS_PROXY", tunnel.url)
    proxy = await start_proxy(f"https://{REMOTE}:{upstream.port}", ca_bundle=str(local_ca.ca_path))
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert [(c["method"], c["authority"]) for c in tunnel.connects] == [
        ("CONNECT", f"{REMOTE}:{upstream.port}")
    ]
    assert local_ca.sni == [REMOTE]
    assert answer["raw_path"] == "/v1/models"


async def test_proxy_credentials_in_https_proxy_go_in_the_connect_request(
    aiohttp_server, start_proxy, client, monkeypatch, local_ca, tunnel
) -> None:
    """``HTTPS_PROXY=http://user:pass@host`` authenticates the CONNECT with Basic auth; the
    target behind the tunnel never sees the proxy credentials."""
    seen = Seen()
    upstream = await _https_echo(aiohttp_server, local_ca, seen)
    monkeypatch.setenv("HTTPS_PROXY", tunnel.url.replace("http://", "http://alice:s3cret@"))
    proxy = await start_proxy(f"https://{REMOTE}:{upstream.port}", ca_bundle=str(local_ca.ca_path))
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert tunnel.connects[0]["proxy-authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert "proxy-authorization" not in {name.lower() for name, _ in answer["headers"]}


async def test_netrc_credentials_are_not_added(aiohttp_server, start_proxy, client) -> None:
    """A ~/.netrc entry for the target's host does not add an Authorization header the user
    never configured (aiohttp's trust_env would)."""
    home = Path.home()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
    netrc.chmod(0o600)
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(str(upstream.make_url("/")))
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
    names = {name.lower() for name, _ in seen.requests[0]["headers"]}
    assert "authorization" not in names


async def test_targets_own_proxy_is_used_even_for_hosts_in_no_proxy(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """A target with ``proxy = "http://user:pass@host:port"`` goes through that proxy with its
    credentials, whatever HTTP_PROXY and NO_PROXY say (the setting is explicit)."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    monkeypatch.setenv("NO_PROXY", "*")
    own = forward_proxy.url.replace("http://", "http://bob:pw-9f8e7d@")
    proxy = await start_proxy(str(upstream.make_url("/")), proxy=own)
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
    assert [hit.target for hit in forward_proxy.hits] == [f"http://127.0.0.1:{upstream.port}/v1/models"]
    assert forward_proxy.hits[0].headers["proxy-authorization"] == "Basic " + base64.b64encode(b"bob:pw-9f8e7d").decode()
    assert seen.requests == []


async def test_proxy_false_connects_directly_despite_http_proxy(
    aiohttp_server, start_proxy, client, monkeypatch, forward_proxy
) -> None:
    """``proxy = false`` on a target (a local Ollama behind a corporate HTTP_PROXY) goes direct."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    proxy = await start_proxy(str(upstream.make_url("/")), proxy="")
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 200
    assert forward_proxy.hits == []
    assert len(seen.requests) == 1
