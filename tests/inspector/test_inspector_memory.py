"""The inspector keeps bodies within its cap: memory stays bounded however much streams through.

Issue 15's "Done when": 1,000 streamed responses of 1 MiB each through the real ``trayproxy
serve`` with ``body_cap_mib = 64`` grow its RSS by at most the cap + 50 MiB. The proxy is a
subprocess of the real CLI following a config file; the target streams each answer as an event
stream in 64 KiB writes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port, status_kib, wait_until
from cli_process import ServeProcess
from listen_helpers import proxy_answers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

MIB = 1024 * 1024
RESPONSES = 1000
BODY_CAP_MIB = 64
# The bound: the body ring plus 50 MiB for everything else (rows, buffers, the heap's
# slack once the ring turns over).
RSS_GROWTH_LIMIT_MIB = BODY_CAP_MIB + 50
# The ring must have been filled, or the bound proves nothing: at the end it holds the last
# ~64 answers, and RSS shows most of them.
RSS_HELD_AT_LEAST_MIB = BODY_CAP_MIB * 3 // 4


def _stream_app(piece: int) -> web.Application:
    """``/v1/stream?n=N``: a 1 MiB event stream in events of ``piece`` bytes, different for
    each N (the proxy could not be holding one body many times over)."""

    async def stream(request: web.Request) -> web.StreamResponse:
        number = int(request.query["n"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = f"data: {number:08d}".encode().ljust(piece - 2, b".") + b"\n\n"
        for _ in range(MIB // piece):
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/stream", stream)
    return app


# Large events (a download's pace) and small ones (an answer's tokens, many more pieces kept).
@pytest.mark.parametrize("piece", [64 * 1024, 4 * 1024], ids=["64k-events", "4k-events"])
def test_a_thousand_streamed_mib_grow_memory_by_at_most_the_body_cap_and_50_mib(
    tmp_path: Path, piece: int
) -> None:
    with BackgroundServer(_stream_app(piece)) as upstream:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(
            f'active = "llm"\n\n[targets.llm]\nurl = "{upstream.url}"\n\n'
            f"[inspector]\nbody_cap_mib = {BODY_CAP_MIB}\n"
        )
        serve = ServeProcess(config, "--port", str(port), "--host", "127.0.0.1", "-q")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: proxy_answers(port, timeout_s=1), timeout_s=15)
            pid = serve.proc.pid
            with httpx.Client(trust_env=False, timeout=30) as client:
                # One request first: imports done and pools made, as a user's idle proxy is.
                assert client.get(base + "/v1/stream", params={"n": -1}).status_code == 200
                idle_kib = status_kib(pid, "VmRSS")
                started = time.monotonic()
                for number in range(RESPONSES):
                    with client.stream("GET", base + "/v1/stream", params={"n": number}) as response:
                        assert response.status_code == 200
                        got = sum(len(piece) for piece in response.iter_raw())
                    assert got == MIB
                took = time.monotonic() - started
            held_mib = (status_kib(pid, "VmRSS") - idle_kib) / 1024
            growth_mib = (status_kib(pid, "VmHWM") - idle_kib) / 1024
            print(
                f"{RESPONSES} x 1 MiB in {took:.1f} s; idle RSS {idle_kib / 1024:.1f} MiB, "
                f"held at the end {held_mib:.1f} MiB, peak growth {growth_mib:.1f} MiB"
            )
            assert held_mib >= RSS_HELD_AT_LEAST_MIB, "the inspector kept no bodies: is it on?"
            assert growth_mib <= RSS_GROWTH_LIMIT_MIB
        finally:
            serve.stop()
