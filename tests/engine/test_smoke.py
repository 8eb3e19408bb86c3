"""A first end-to-end check that fixtures, proxy and upstream fit together."""

import aiohttp
from upstreams import Seen, echo_app


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
