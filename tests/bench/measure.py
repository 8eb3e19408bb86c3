"""Benchmark measurements: each function drives one kind of load at a URL and returns figures.

Load runs where this process runs (the load CPU); the proxy's cost is read from /proc:
CPU time as utime + stime of its process (every thread), memory as VmRSS and VmHWM, with the
peak reset through /proc/PID/clear_refs before a transfer so that VmHWM afterwards is that
transfer's peak. Nothing here starts servers or prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
# An SSE line is `data: {"i":N,"t":T}`: the payload after this prefix is the JSON.
SSE_DATA = b"data: {"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..1."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# --- the proxy process, from /proc


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far, all its threads (proc(5): fields 14, 15)."""
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def memory_kib(pid: int, field: str) -> int:
    """A /proc/PID/status figure in KiB: VmRSS (resident now) or VmHWM (resident peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} for {pid}")


def has_loaded(pid: int, library: str) -> bool:
    """Whether a shared object whose path contains ``library`` is mapped into the process."""
    return any(library in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to VmRSS (Linux 4.0+, our own child process); False where refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- small requests (wrk)


@dataclass(frozen=True)
class WrkRun:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def run_wrk(url: str, *, connections: int, seconds: int, script: Path | None = None) -> WrkRun:
    """One wrk run with one thread (the load CPU), latency percentiles from --latency;
    ``script``: a wrk Lua script that makes the request (``post_script``)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *(["-s", str(script)] if script else []), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def number(pattern: str) -> str:
        match = re.search(pattern, out)
        if not match:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out}")
        return match.group(1)

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else float("nan")

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1)) if "Non-2xx" in out else 0
    return WrkRun(
        requests=int(number(r"(\d+) requests in")),
        rps=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=latency_ms("50"),
        p99_ms=latency_ms("99"),
        errors=errors,
    )


def post_script(path: Path, body: bytes) -> Path:
    """Write a wrk Lua script that POSTs ``body`` as JSON (the same request every time)."""
    text = body.decode()
    if "]]" in text:
        raise ValueError("the body cannot go in a Lua long string")
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{text}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


# --- transfers (curl: a C client, so the client is not what limits MB/s)


def _curl(args: list[str]) -> tuple[int, float, int]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %{size_download} %{size_upload}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    status, seconds, down, up = int(out[0]), float(out[1]), int(out[2]), int(out[3])
    return status, seconds, max(down, up)


def get_small(url: str) -> None:
    """One small request; raises unless it answers 200."""
    status, _, _ = _curl([url])
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}")


def download_mb_s(url: str, size: int) -> float:
    status, seconds, moved = _curl([url])
    if status != 200 or moved != size:
        raise RuntimeError(f"download {url}: HTTP {status}, {moved} of {size} bytes")
    return size / MB / seconds


def upload_mb_s(url: str, source: Path) -> float:
    """PUT the file; `Expect:` off, or curl waits for a 100 Continue that some proxies never send."""
    size = source.stat().st_size
    status, seconds, moved = _curl(["-T", str(source), "-H", "Expect:", url])
    if status not in (201, 204) or moved != size:
        raise RuntimeError(f"upload {url}: HTTP {status}, {moved} of {size} bytes")
    return size / MB / seconds


# --- SSE


@dataclass(frozen=True)
class SseRun:
    first_event_ms: float  # request sent -> first event read, on a new connection
    delays_ms: list[float]  # per event: read time minus the source's stamp (same clock)


async def read_sse(url: str, *, events: int, gap_s: float) -> SseRun:
    delays: list[float] = []
    first_event_ms = float("nan")
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        started = time.monotonic()
        async with session.get(f"{url}?n={events}&gap={gap_s}") as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(SSE_DATA):
                    now = time.monotonic()
                    if not delays:
                        first_event_ms = (now - started) * 1000
                    delays.append((now - json.loads(line[6:])["t"]) * 1000)
    if len(delays) != events:
        raise RuntimeError(f"SSE {url}: {len(delays)} of {events} events")
    return SseRun(first_event_ms, delays)


# --- WebSocket echo


async def websocket_round_trips_s(url: str, *, size: int, count: int, connections: int = 1) -> float:
    """Round trips per second over ``connections`` sockets, each sending ``count`` messages one at a
    time and waiting for each echo; the handshakes happen before the clock starts."""
    payload = os.urandom(size)

    async def echo_loop(ws: aiohttp.ClientWebSocketResponse) -> None:
        for _ in range(count):
            await ws.send_bytes(payload)
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY or len(msg.data) != size:
                raise RuntimeError(f"WebSocket {url}: got {msg.type} instead of the echo")

    async with aiohttp.ClientSession() as session, AsyncExitStack() as sockets:
        opened = [
            await sockets.enter_async_context(session.ws_connect(url, compress=0, max_msg_size=0))
            for _ in range(connections)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(echo_loop(ws) for ws in opened))
        elapsed = time.perf_counter() - started
    return connections * count / elapsed
