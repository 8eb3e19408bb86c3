"""The access line's byte count is the body the client got, whoever wrote it: the target, or
TrayProxy itself (a 502 when the target is down, a guard's 403, the health document).

Each case sends a real request through a real proxy and compares the line's count with the
length of the body the client read.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from upstreams import dead_port, echo_app

from desktop.engine.accesslog import ACCESS_LOGGER

# The access line is written as the handler ends; polled this often, this many times (2 s).
POLL_S = 0.02
POLLS = 100


async def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    for _ in range(POLLS):
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER.name]
        if lines:
            return lines
        await asyncio.sleep(POLL_S)
    return []


def byte_count(line: str) -> int:
    """The bytes field: ``ip "METHOD /path" [-> target] status BYTES ttfb=...``."""
    before_ttfb = line.split(" ttfb=")[0]
    return int(before_ttfb.rsplit(" ", 1)[1])


@pytest.mark.parametrize(
    ("case", "method", "path", "headers"),
    [
        ("target answers", "GET", "/v1/models", {}),
        ("target refuses the connection: 502 JSON", "GET", "/v1/models", {}),
        ("guard refuses a foreign page: 403 JSON", "GET", "/v1/models", {"Origin": "https://evil.test"}),
        ("health document", "GET", "/__trayproxy/health", {}),
        ("HEAD with a 502: no body goes out", "HEAD", "/v1/models", {}),
    ],
)
async def test_access_line_counts_the_body_the_client_received(
    aiohttp_server,
    start_proxy,
    caplog: pytest.LogCaptureFixture,
    case: str,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Reading the log, a person sees how much each answer carried: TrayProxy's own JSON
    errors said 0 bytes before, as if nothing had been sent."""
    if "refuses the connection" in case or case.startswith("HEAD"):
        target = f"http://127.0.0.1:{dead_port()}"
    else:
        target = str((await aiohttp_server(echo_app())).make_url(""))
    proxy = await start_proxy(target)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, proxy.url + path, headers=headers) as answer,
        ):
            body = await answer.read()
        (line,) = await access_lines(caplog)
    if case.startswith("HEAD"):
        assert answer.status == 502
        assert body == b""
    else:
        assert body, "the case must have a body to count"
    assert byte_count(line) == len(body), line
