"""Benchmark report: the machine it ran on, ratios between paths, and the Markdown table.

Pure formatting apart from ``describe_machine``, which asks each program for its version.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from servers import ROOT, Pinning

PATHS = ("direct", "nginx", "caddy", "trayproxy")
SUBJECT = "trayproxy"
BASELINES = ("direct", "nginx", "caddy")

# (key, label): ↑ higher is better, ↓ lower is better. Ratios are TrayProxy's figure divided by
# the other path's, so > 1 is better on ↑ rows and worse on ↓ rows.
ROWS = (
    ("small_c1_rps", "small req/s, c=1 ↑"),
    ("small_c1_p50_ms", "small p50 ms, c=1 ↓"),
    ("small_c1_p99_ms", "small p99 ms, c=1 ↓"),
    ("small_c64_rps", "small req/s, c=64 ↑"),
    ("small_c64_p50_ms", "small p50 ms, c=64 ↓"),
    ("small_c64_p99_ms", "small p99 ms, c=64 ↓"),
    ("cpu_us_per_req_c1", "proxy CPU µs/req, c=1 ↓"),
    ("cpu_us_per_req_c64", "proxy CPU µs/req, c=64 ↓"),
    ("cpu_busy_c64", "proxy CPU busy, c=64 (1 = saturated)"),
    ("download_mb_s", "64 MiB download MB/s ↑"),
    ("upload_mb_s", "64 MiB upload MB/s ↑"),
    ("rss_idle_mib", "proxy idle RSS MiB ↓"),
    ("rss_growth_mib", "proxy peak RSS growth MiB ↓"),
    ("sse_delay_p50_ms", "SSE delay p50 ms ↓"),
    ("sse_delay_p99_ms", "SSE delay p99 ms ↓"),
    ("sse_added_p50_ms", "SSE added delay p50 ms ↓"),
    ("sse_added_p99_ms", "SSE added delay p99 ms ↓"),
    ("sse_first_event_ms", "SSE first event ms ↓"),
    ("ws_1k_rt_s", "WS echo 1 KiB rt/s ↑"),
    ("ws_64k_rt_s", "WS echo 64 KiB rt/s ↑"),
    ("ws_1k_concurrent_rt_s", "WS echo 1 KiB rt/s, concurrent ↑"),
)
# Recorded answers (``serve --cache replay``): trayproxy-replay answers from its recording, the
# other paths from the upstream. Ratios are trayproxy-replay's figure over direct's and over
# trayproxy's forwarding the same request.
REPLAYED = "trayproxy-replay"
REPLAY_PATHS = (*PATHS, REPLAYED)
REPLAY_BASELINES = ("direct", SUBJECT)
REPLAY_ROWS = (
    ("answer4k_c1_p50_ms", "4 KiB answer p50 ms, c=1 ↓"),
    ("answer4k_c1_p99_ms", "4 KiB answer p99 ms, c=1 ↓"),
    ("answer4k_cpu_us_per_req", "proxy CPU µs per 4 KiB answer ↓"),
    ("answer_stream_first_event_ms", "stream first event ms ↓"),
)
# Differences (from direct, from idle): a ratio of two small noisy differences says nothing.
NO_RATIO = {"sse_added_p50_ms", "sse_added_p99_ms", "rss_growth_mib", "cpu_busy_c64"}


def ratios(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """TrayProxy's figure over each baseline's, per figure: {"small_c64_rps": {"nginx": 0.4, ...}}."""
    subject = figures.get(SUBJECT, {})
    out: dict[str, dict[str, float]] = {}
    for key, _ in ROWS:
        if key in NO_RATIO or key not in subject:
            continue
        out[key] = {
            base: subject[key] / figures[base][key]
            for base in BASELINES
            if figures.get(base, {}).get(key, 0) > 0
        }
    return out


def replay_ratios(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """trayproxy-replay's figure over direct's and trayproxy's: {"answer4k_c1_p50_ms": {"direct": 1.3, ...}}."""
    replayed = figures.get(REPLAYED, {})
    return {
        key: {
            base: replayed[key] / figures[base][key]
            for base in REPLAY_BASELINES
            if figures.get(base, {}).get(key, 0) > 0
        }
        for key, _ in REPLAY_ROWS
        if key in replayed
    }


def _number(value: float | None) -> str:
    if value is None or value != value:  # missing or NaN
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def markdown(results: dict[str, Any]) -> str:
    figures: dict[str, dict[str, float]] = results["figures"]
    ratio_table: dict[str, dict[str, float]] = results["ratios"]
    machine: dict[str, str] = results["machine"]
    lines = [f"{name}: {value}" for name, value in machine.items()]
    lines.append(f"run: {results['command']} ({results['seconds']:.0f} s)")
    lines.append("")
    header = ["figure", *PATHS, *(f"{SUBJECT} / {base}" for base in BASELINES)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---" + "|---:" * (len(header) - 1) + "|")
    for key, label in ROWS:
        values = [_number(figures.get(path, {}).get(key)) for path in PATHS]
        shares = [_number(ratio_table.get(key, {}).get(base)) for base in BASELINES]
        lines.append("| " + " | ".join([label, *values, *shares]) + " |")
    replay_table = results.get("replay_ratios") or {}
    if replay_table:
        header = ["recorded answers", *REPLAY_PATHS, *(f"replay / {base}" for base in REPLAY_BASELINES)]
        lines += ["", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        for key, label in REPLAY_ROWS:
            values = [_number(figures.get(path, {}).get(key)) for path in REPLAY_PATHS]
            shares = [_number(replay_table.get(key, {}).get(base)) for base in REPLAY_BASELINES]
            lines.append("| " + " | ".join([label, *values, *shares]) + " |")
    notes = []
    for path in REPLAY_PATHS:
        for key, value in sorted(figures.get(path, {}).items()):
            if key.endswith("_errors"):
                notes.append(f"{path}: {value:.0f} wrk errors or non-2xx answers in a {key[:-7]} run")
            if key == "rss_growth_is_lifetime_peak":
                notes.append(f"{path}: could not reset VmHWM; RSS growth is the lifetime peak")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _version(args: list[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _checkout() -> str:
    commit = _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], r"([0-9a-f]{7,})")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "desktop"], capture_output=True, text=True
    ).stdout.strip()
    return f"{commit}{' with uncommitted changes in desktop/' if dirty else ''}"


def describe_machine(pinning: Pinning, *, checkout: bool = True) -> dict[str, str]:
    """What the figures depend on: CPUs, kernel, load, pinning, and each program's version;
    ``checkout``: whether the TrayProxy measured is this checkout's (its commit is named)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), Linux {platform.release()}, load average {load}",
        "pinning": pinning.note,
        "servers": (
            f"nginx {_version(['nginx', '-v'])}, Caddy {_version(['caddy', 'version'])}, "
            f"wrk {_version(['wrk', '-v'])}, curl {_version(['curl', '--version'])}"
        ),
        "python": (
            f"Python {platform.python_version()}, aiohttp {_package('aiohttp')}, "
            f"uvloop {_package('uvloop')}, TrayProxy {_package('trayproxy')}"
            + (f" at {_checkout()}" if checkout else "")
        ),
    }
