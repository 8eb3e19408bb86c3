"""TrayProxy benchmark: the proxy against a direct connection and nginx, in one run, as ratios.

    .venv/bin/python tests/bench/run.py            # full run, a few minutes
    .venv/bin/python tests/bench/run.py --smoke    # seconds; checks the harness works

Needs ``nginx`` and ``wrk`` (Debian: ``apt-get install nginx-light wrk``). Everything listens
on 127.0.0.1. The origin for small requests and downloads is an nginx instance (fast enough
that it is not what is measured); the SSE source and upload sink are a small aiohttp app.
Three paths are measured in the same run: direct to the origin, through nginx as a reverse
proxy (one worker, buffering off, upstream keep-alive), and through ``trayproxy serve``.
Results: a Markdown table on stdout and ``results/bench-<time>.json``. The machine is shared
and noisy, so compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SSE_SOURCE = HERE / "sse_source.py"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
error_log {tmp}/error.log warn;
pid {tmp}/nginx-{name}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body-{name};
    proxy_temp_path {tmp}/proxy-{name};
    fastcgi_temp_path {tmp}/fcgi-{name};
    uwsgi_temp_path {tmp}/uwsgi-{name};
    scgi_temp_path {tmp}/scgi-{name};
    {body}
}}
"""

ORIGIN_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location = /small {{ default_type application/json; return 200 '{{"object":"list","data":[]}}'; }}
        location /files/ {{ alias {tmp}/files/; }}
    }}
"""

PROXY_BODY = """\
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    upstream sse {{ server 127.0.0.1:{sse}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        location /sse {{ proxy_pass http://sse; }}
        location /upload {{ proxy_pass http://sse; }}
        location / {{ proxy_pass http://origin; }}
    }}
"""


@contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def nginx(tmp: Path, name: str, body: str) -> list[str]:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, name=name, body=body))
    return [shutil.which("nginx") or "nginx", "-c", str(conf), "-p", str(tmp)]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99")}


async def download(url: str, size: int) -> float:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        started = time.perf_counter()
        async with session.get(url) as response:
            got = 0
            async for chunk in response.content.iter_any():
                got += len(chunk)
        elapsed = time.perf_counter() - started
    assert got == size, (got, size)
    return size / MIB / elapsed


async def upload(url: str, size: int) -> float:
    block = b"u" * (256 * 1024)

    async def body() -> object:
        for _ in range(size // len(block)):
            yield block

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.post(url, data=body()) as response:
            got = int(await response.text())
        elapsed = time.perf_counter() - started
    assert got == size, (got, size)
    return size / MIB / elapsed


async def sse_delays(url: str, events: int) -> list[float]:
    """Per-event delay in ms: receive time minus the source's send stamp (same monotonic clock)."""
    delays = []
    async with aiohttp.ClientSession() as session, session.get(f"{url}?n={events}&gap=0.01") as response:
        async for line in response.content:
            if line.startswith(b"data: {"):
                now = time.monotonic()
                delays.append((now - json.loads(line[6:])["t"]) * 1000)
    return delays


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and durations")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each wrk run")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            print(f"{tool} is missing: apt-get install nginx-light wrk", file=sys.stderr)
            return 2
    seconds = 1.0 if args.smoke else args.seconds
    big = (8 if args.smoke else 256) * MIB
    sse_events = 20 if args.smoke else 300

    with tempfile.TemporaryDirectory(prefix="trayproxy-bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "files").mkdir()
        with open(tmp / "files" / "big", "wb") as f:
            f.truncate(big)
        origin, nginx_proxy, tray, sse = free_port(), free_port(), free_port(), free_port()
        with (
            process(nginx(tmp, "origin", ORIGIN_BODY.format(port=origin, tmp=tmp))),
            process([sys.executable, str(SSE_SOURCE), str(sse)]),
            process(nginx(tmp, "proxy", PROXY_BODY.format(port=nginx_proxy, origin=origin, sse=sse))),
        ):
            for port in (origin, nginx_proxy, sse):
                wait_for_port(port)
            # TrayProxy forwards everything to one target; small requests and downloads go to
            # the nginx origin, SSE and uploads to the aiohttp source: two instances.
            tray_sse = free_port()
            serve = [sys.executable, "-m", "desktop", "serve", "-q", "--host", "127.0.0.1"]
            with (
                process(
                    [*serve, "--target", f"http://127.0.0.1:{origin}", "--port", str(tray)], cwd=ROOT
                ) as tray_proc,
                process(
                    [*serve, "--target", f"http://127.0.0.1:{sse}", "--port", str(tray_sse)], cwd=ROOT
                ) as tray_sse_proc,
            ):
                wait_for_port(tray)
                wait_for_port(tray_sse)
                results = run_all(
                    paths={
                        "direct": (origin, sse),
                        "nginx": (nginx_proxy, nginx_proxy),
                        "trayproxy": (tray, tray_sse),
                    },
                    tray_pids=(tray_proc.pid, tray_sse_proc.pid),
                    seconds=seconds,
                    big=big,
                    sse_events=sse_events,
                )
    report(results)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {out.relative_to(ROOT)}")
    return 0


def run_all(
    *,
    paths: dict[str, tuple[int, int]],
    tray_pids: tuple[int, int],
    seconds: float,
    big: int,
    sse_events: int,
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {name: {} for name in paths}
    idle = {pid: rss_kib(pid) for pid in tray_pids}
    for name, (port, _) in paths.items():
        wrk(f"http://127.0.0.1:{port}/small", 8, min(1.0, seconds))  # warm pools
        for conns in (1, 64):
            figures = wrk(f"http://127.0.0.1:{port}/small", conns, seconds)
            results[name][f"small_c{conns}_rps"] = figures["rps"]
            results[name][f"small_c{conns}_p50_ms"] = figures["p50_ms"]
            results[name][f"small_c{conns}_p99_ms"] = figures["p99_ms"]
    for name, (port, sse_port) in paths.items():
        results[name]["download_mib_s"] = asyncio.run(download(f"http://127.0.0.1:{port}/files/big", big))
        results[name]["upload_mib_s"] = asyncio.run(upload(f"http://127.0.0.1:{sse_port}/upload", big))
        delays = asyncio.run(sse_delays(f"http://127.0.0.1:{sse_port}/sse", sse_events))
        results[name]["sse_delay_p50_ms"] = pctl(delays, 0.5)
        results[name]["sse_delay_p99_ms"] = pctl(delays, 0.99)
    tray = results["trayproxy"]
    tray["idle_rss_mib"] = idle[tray_pids[0]] / 1024
    tray["peak_rss_growth_mib"] = max((rss_kib(pid, "VmHWM") - idle[pid]) / 1024 for pid in tray_pids)
    return results


def report(results: dict[str, dict[str, float]]) -> None:
    rows = [
        ("small req/s, c=1", "small_c1_rps", True),
        ("small p99 ms, c=1", "small_c1_p99_ms", False),
        ("small req/s, c=64", "small_c64_rps", True),
        ("small p99 ms, c=64", "small_c64_p99_ms", False),
        ("download MiB/s", "download_mib_s", True),
        ("upload MiB/s", "upload_mib_s", True),
        ("SSE delay p50 ms", "sse_delay_p50_ms", False),
        ("SSE delay p99 ms", "sse_delay_p99_ms", False),
    ]
    print("| figure | direct | nginx | trayproxy | trayproxy / direct | trayproxy / nginx |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, key, _ in rows:
        d, n, t = (results[p][key] for p in ("direct", "nginx", "trayproxy"))
        print(f"| {label} | {d:.2f} | {n:.2f} | {t:.2f} | {t / d:.2f} | {t / n:.2f} |")
    tray = results["trayproxy"]
    print(
        f"\nTrayProxy idle RSS {tray['idle_rss_mib']:.1f} MiB, peak growth {tray['peak_rss_growth_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
