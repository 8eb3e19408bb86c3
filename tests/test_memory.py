"""Memory stays flat while large bodies stream through the real ``trayproxy serve``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from background import BackgroundServer, free_port, status_kib, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

MIB = 1024 * 1024
TOTAL_BYTES = 256 * MIB
BLOCK = b"m" * MIB
# The bound: peak RSS within about 64 MiB of idle while 256 MiB pass each way.
RSS_GROWTH_LIMIT_MIB = 64


def _bulk_app():  # type: ignore[no-untyped-def]
    from aiohttp import web

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(TOTAL_BYTES)})
        await response.prepare(request)
        for _ in range(TOTAL_BYTES // MIB):
            await response.write(BLOCK)
        return response

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(text=str(size))

    app = web.Application(client_max_size=0)
    app.router.add_get("/down", download)
    app.router.add_post("/up", upload)
    return app


def test_256_mib_each_way_keeps_proxy_memory_flat() -> None:
    """Moving a 256 MiB download and a 256 MiB upload (chunked and with a length) through the
    proxy does not grow its memory by more than 64 MiB: nothing is collected in memory."""
    with BackgroundServer(_bulk_app()) as upstream:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "desktop",
                "serve",
                "--target",
                upstream.url,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "-q",
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(base + "/__trayproxy/health"), timeout_s=15)
            idle_kib = status_kib(proc.pid, "VmRSS")
            with httpx.Client(trust_env=False, timeout=60) as client:
                with client.stream("GET", base + "/down") as response:
                    got = sum(len(chunk) for chunk in response.iter_raw())
                assert got == TOTAL_BYTES

                def blocks():  # type: ignore[no-untyped-def]
                    for _ in range(TOTAL_BYTES // MIB):
                        yield BLOCK

                assert client.post(base + "/up", content=blocks()).text == str(TOTAL_BYTES)
                sized = client.post(
                    base + "/up", content=blocks(), headers={"Content-Length": str(TOTAL_BYTES)}
                )
                assert sized.text == str(TOTAL_BYTES)
            growth_mib = (status_kib(proc.pid, "VmHWM") - idle_kib) / 1024
            print(f"idle RSS {idle_kib / 1024:.1f} MiB, peak growth {growth_mib:.1f} MiB")
            assert growth_mib < RSS_GROWTH_LIMIT_MIB
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert code == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False, timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.05)
        return False
