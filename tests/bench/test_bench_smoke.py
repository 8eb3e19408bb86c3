"""The benchmark's smoke mode runs every path and produces every figure the issue asks for.

Runs only where nginx, Caddy, wrk and curl are installed (``tests/bench/deps.sh``); the full
benchmark is never run by pytest (``tests/bench/run.py`` is not a test module).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).with_name("run.py")
TOOLS = ("nginx", "caddy", "wrk", "curl", "taskset")
PATHS = ("direct", "nginx", "caddy", "trayproxy")
EVERY_PATH = (
    "small_c1_rps",
    "small_c1_p50_ms",
    "small_c1_p99_ms",
    "small_c64_rps",
    "small_c64_p50_ms",
    "small_c64_p99_ms",
    "download_mb_s",
    "upload_mb_s",
    "sse_delay_p50_ms",
    "sse_delay_p99_ms",
    "sse_first_event_ms",
    "ws_1k_rt_s",
    "ws_64k_rt_s",
    "ws_1k_concurrent_rt_s",
)
PROXIES_ONLY = (
    "cpu_us_per_req_c1",
    "cpu_us_per_req_c64",
    "cpu_busy_c64",
    "rss_idle_mib",
    "rss_growth_mib",
    "sse_added_p50_ms",
    "sse_added_p99_ms",
)
# Recorded answers: every path answers the same 4 KiB question and stream, trayproxy-replay from
# its recording (the run itself fails if a measured one reached the upstream).
REPLAY_PATHS = (*PATHS, "trayproxy-replay")
REPLAY_FIGURES = ("answer4k_c1_p50_ms", "answer4k_c1_p99_ms", "answer_stream_first_event_ms")
# Seconds: the smoke run takes about 11 on two idle cores; a loaded shared machine is slower.
SMOKE_TIMEOUT_S = 150

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in TOOLS),
        reason=f"needs {', '.join(TOOLS)}: bash tests/bench/deps.sh",
    ),
]


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 10)
def test_smoke_run_measures_every_path_and_figure(tmp_path: Path) -> None:
    """A harness that broke (a proxy's config, a parser of wrk's output) fails here, not in a
    three-minute run; wrk errors or non-2xx answers on any path fail it too."""
    out = tmp_path / "bench.json"
    bench = subprocess.Popen(
        [sys.executable, str(RUN), "--smoke", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=SMOKE_TIMEOUT_S)
    finally:
        # SIGTERM first: the harness then stops the servers it started.
        bench.terminate()
        bench.communicate()
    assert bench.returncode == 0, stderr[-4000:]
    results = json.loads(out.read_text())
    figures = results["figures"]
    for path in PATHS:
        wanted = EVERY_PATH if path == "direct" else EVERY_PATH + PROXIES_ONLY
        missing = [key for key in wanted if key not in figures[path]]
        assert not missing, f"{path} lacks {missing}"
        assert not [key for key in figures[path] if key.endswith("_errors")], figures[path]
        assert all(figures[path][key] > 0 for key in EVERY_PATH), figures[path]
    for base in ("direct", "nginx", "caddy"):
        assert results["ratios"]["small_c64_rps"][base] > 0
    for path in REPLAY_PATHS:
        assert all(figures[path].get(key, 0) > 0 for key in REPLAY_FIGURES), (path, figures[path])
        assert "answer4k_c1_errors" not in figures[path], figures[path]
    assert figures["trayproxy-replay"]["answer4k_cpu_us_per_req"] > 0
    assert set(results["replay_ratios"]["answer4k_c1_p50_ms"]) == {"direct", "trayproxy"}
    assert "| small req/s, c=64 ↑ |" in stdout
    assert "| 4 KiB answer p50 ms, c=1 ↓ |" in stdout
    assert "pinning:" in stdout
