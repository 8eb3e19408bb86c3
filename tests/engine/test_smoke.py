"""A first end-to-end check that fixtures, proxy and upstream fit together."""

import aiohttp
from upstreams import Seen, echo_app

from desktop.engine.addresses import HEALTH_PATH


async def test_get_reaches_target_with_raw_target_intact(aiohttp_server, start_proxy) -> None:
    """A tool's request arrives at the target with its path bytes and query unchanged."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(str(upstream.make_url("/base")))
    async with aiohttp.ClientSession() as client:
        url = proxy.url + "/v1/a%2Fb/%C3%A9?x=%2F&y=a+b"
        async with client.get(aiohttp.client.URL(url, encoded=True)) as response:
            assert response.status == 200
            body = await response.json()
    assert body["raw_path"] == "/base/v1/a%2Fb/%C3%A9?x=%2F&y=a+b"
    assert len(seen.requests) == 1


async def test_health_of_an_idle_proxy_says_no_request_is_open(start_proxy) -> None:
    """The health document does not count the request asking for it: idle means 0."""
    proxy = await start_proxy("http://127.0.0.1:9")
    async with aiohttp.ClientSession() as session, session.get(proxy.url + HEALTH_PATH) as response:
        document = await response.json()
    assert document["app"] == "trayproxy"
    assert document["requests_active"] == 0
