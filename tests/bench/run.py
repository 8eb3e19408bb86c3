"""TrayProxy benchmark: direct, nginx, Caddy and ``trayproxy serve`` side by side, in one run.

    bash tests/bench/run.sh                        # fresh Debian: installs, then the full run
    .venv/bin/python tests/bench/run.py            # full run, about 3 minutes
    .venv/bin/python tests/bench/run.py --smoke    # every figure briefly: checks the harness

Needs nginx, Caddy, wrk, curl and taskset (``tests/bench/deps.sh`` installs them). Everything
listens on 127.0.0.1. The proxy under test is pinned to one CPU, the upstream, the load and the
clients to another (see ``servers.py`` for the upstream and each proxy's configuration). Each
kind of measurement is interleaved across the paths and repeated; figures are medians. The
machine may be shared and noisy, so read the ratios, measured in the same run, more than the
absolute numbers. The cache kind adds a fifth path, ``trayproxy serve --cache replay``, which
answers the same question and stream from its recording. Output: Markdown tables on stdout and
``results/bench-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import measure
import report
import servers
from servers import Route

MIB = 1024 * 1024
RESULTS = servers.HERE / "results"
NEEDED_TOOLS = ("nginx", "caddy", "wrk", "curl")


@dataclass(frozen=True)
class Plan:
    """How much of each load a run makes; every count is per path."""

    wrk_seconds: int  # one wrk run (wrk takes whole seconds)
    wrk_repeats: int  # runs per connection count, interleaved across paths; the median is kept
    warmup_seconds: int  # wrk at 64 connections before measuring: pools and caches filled
    transfer_bytes: int
    transfers: int  # downloads and uploads each; the median is kept
    sse_streams: int  # each on a new connection: one time-to-first-event sample each
    sse_events: int  # per stream; delays of all streams are pooled for p50/p99
    sse_gap_s: float  # between events: the path is idle when each event leaves
    ws_small_round_trips: int  # 1 KiB messages, one at a time
    ws_large_round_trips: int  # 64 KiB messages, one at a time
    ws_connections: int  # for the concurrent 1 KiB figure
    ws_repeats: int


FULL = Plan(
    wrk_seconds=5,
    wrk_repeats=3,
    warmup_seconds=1,
    transfer_bytes=64 * MIB,
    transfers=5,
    sse_streams=10,
    sse_events=50,
    sse_gap_s=0.005,
    ws_small_round_trips=2000,
    ws_large_round_trips=500,
    ws_connections=8,
    ws_repeats=3,
)
SMOKE = Plan(
    wrk_seconds=1,
    wrk_repeats=1,
    warmup_seconds=0,
    transfer_bytes=4 * MIB,
    transfers=1,
    sse_streams=2,
    sse_events=10,
    sse_gap_s=0.005,
    ws_small_round_trips=50,
    ws_large_round_trips=20,
    ws_connections=4,
    ws_repeats=1,
)


class Samples:
    """Figures per path, collected over repetitions; ``summary`` keeps one number per figure."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.peaks: dict[str, dict[str, float]] = defaultdict(dict)

    def add(self, route: Route, key: str, value: float) -> None:
        self.values[route.name][key].append(value)

    def peak(self, route: Route, key: str, value: float) -> None:
        """Keep the worst case rather than the median (memory growth)."""
        self.peaks[route.name][key] = max(value, self.peaks[route.name].get(key, value))

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, figures in self.values.items():
            out[name] = {key: measure.median(values) for key, values in figures.items()}
            out[name].update(self.peaks[name])
        return out


def rotated(routes: list[Route], turn: int) -> list[Route]:
    """A different path goes first in each repetition, so no path always runs right after another."""
    shift = turn % len(routes)
    return routes[shift:] + routes[:shift]


def transfer_with_memory(route: Route, key: str, transfer: Callable[[], float], samples: Samples) -> None:
    """Run one transfer; keep its MB/s and, for a proxy, how far its resident memory rose."""
    pid = route.http_pid
    if not pid:
        samples.add(route, key, transfer())
        return
    before_kib = measure.memory_kib(pid, "VmRSS")
    exact = measure.reset_peak_rss(pid)
    samples.add(route, key, transfer())
    # Without the reset, VmHWM is the process's lifetime peak: still an upper bound.
    samples.peak(route, "rss_growth_mib", (measure.memory_kib(pid, "VmHWM") - before_kib) / 1024)
    if not exact:
        samples.peak(route, "rss_growth_is_lifetime_peak", 1.0)


def measure_transfers(routes: list[Route], plan: Plan, source: Path, samples: Samples) -> None:
    for turn in range(plan.transfers):
        for route in rotated(routes, turn):
            base = f"http://127.0.0.1:{route.http_port}"
            download = partial(measure.download_mb_s, f"{base}/files/big", plan.transfer_bytes)
            transfer_with_memory(route, "download_mb_s", download, samples)
            upload = partial(measure.upload_mb_s, f"{base}/upload/{route.name}", source)
            transfer_with_memory(route, "upload_mb_s", upload, samples)


def measure_sse(routes: list[Route], plan: Plan, samples: Samples) -> None:
    delays: dict[str, list[float]] = defaultdict(list)
    for turn in range(plan.sse_streams):
        for route in rotated(routes, turn):
            url = f"http://127.0.0.1:{route.stream_port}/sse"
            run = asyncio.run(measure.read_sse(url, events=plan.sse_events, gap_s=plan.sse_gap_s))
            samples.add(route, "sse_first_event_ms", run.first_event_ms)
            delays[route.name].extend(run.delays_ms)
    for route in routes:
        samples.add(route, "sse_delay_p50_ms", measure.percentile(delays[route.name], 0.50))
        samples.add(route, "sse_delay_p99_ms", measure.percentile(delays[route.name], 0.99))


def measure_websockets(routes: list[Route], plan: Plan, samples: Samples) -> None:
    loads = (
        ("ws_1k_rt_s", 1024, plan.ws_small_round_trips, 1),
        ("ws_64k_rt_s", 64 * 1024, plan.ws_large_round_trips, 1),
        (
            "ws_1k_concurrent_rt_s",
            1024,
            plan.ws_small_round_trips // plan.ws_connections,
            plan.ws_connections,
        ),
    )
    for turn in range(plan.ws_repeats):
        for route in rotated(routes, turn):
            url = f"http://127.0.0.1:{route.stream_port}/ws"
            for key, size, count, connections in loads:
                rate = asyncio.run(
                    measure.websocket_round_trips_s(url, size=size, count=count, connections=connections)
                )
                samples.add(route, key, rate)


def measure_small(routes: list[Route], plan: Plan, samples: Samples) -> None:
    if plan.warmup_seconds:
        for route in routes:
            measure.run_wrk(
                f"http://127.0.0.1:{route.http_port}/small", connections=64, seconds=plan.warmup_seconds
            )
    for turn in range(plan.wrk_repeats):
        for connections in (1, 64):
            for route in rotated(routes, turn):
                pid = route.http_pid
                cpu_before = measure.cpu_seconds(pid) if pid else 0.0
                run = measure.run_wrk(
                    f"http://127.0.0.1:{route.http_port}/small",
                    connections=connections,
                    seconds=plan.wrk_seconds,
                )
                prefix = f"small_c{connections}"
                samples.add(route, f"{prefix}_rps", run.rps)
                samples.add(route, f"{prefix}_p50_ms", run.p50_ms)
                samples.add(route, f"{prefix}_p99_ms", run.p99_ms)
                if run.errors:
                    samples.peak(route, f"{prefix}_errors", run.errors)
                if pid:
                    cpu_s = measure.cpu_seconds(pid) - cpu_before
                    samples.add(route, f"cpu_us_per_req_c{connections}", cpu_s * 1e6 / max(1, run.requests))
                    # Near 1: the proxy's CPU was the limit. Well below: something else was (the
                    # load CPU, wake-ups, or other processes on the proxy's CPU).
                    samples.add(route, f"cpu_busy_c{connections}", cpu_s / plan.wrk_seconds)


def answers_served(tmp: Path) -> int:
    """How many 4 KiB answers the origin gave so far (its access log for them, one line each)."""
    log = tmp / servers.ANSWER_LOG
    return log.read_bytes().count(b"\n") if log.exists() else 0


def streams_served(stream_port: int) -> int:
    """How many SSE streams the stream upstream was asked for so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stream_port}/served", timeout=10) as response:
        return int(response.read())


def until_recorded(ask: Callable[[], object], served: Callable[[], int], what: str) -> None:
    """Ask until an ask no longer reaches the upstream: from then on the replay path answers
    from its recording (the recording is written just after the first answer ends)."""
    for _ in range(RECORD_TRIES):
        before = served()
        ask()
        if served() == before:
            return
        time.sleep(0.2)
    raise RuntimeError(f"trayproxy-replay still sends {what} to the upstream after {RECORD_TRIES} tries")


def measure_replay(routes: list[Route], plan: Plan, tmp: Path, samples: Samples) -> None:
    """Recorded answers (``serve --cache replay``) against the answer itself: the same 4 KiB
    chat completion asked again and again by wrk at one connection, and the first event of the
    same stream, each on every path. On trayproxy-replay, no measured request may reach the
    upstream (the origin and the stream upstream count what they served): a miss fails the run."""
    script = measure.post_script(tmp / "question.lua", servers.QUESTION)
    direct = next(route for route in routes if route.name == "direct")
    replay = next(route for route in routes if route.name == REPLAYED)
    answer_url = f"http://127.0.0.1:{replay.http_port}{servers.ANSWER_PATH}"
    stream_url = f"http://127.0.0.1:{replay.stream_port}/sse"

    def one_second_of_questions() -> object:
        return measure.run_wrk(answer_url, connections=1, seconds=1, script=script)

    def one_stream() -> object:
        return asyncio.run(measure.read_sse(stream_url, events=REPLAY_EVENTS, gap_s=plan.sse_gap_s))

    until_recorded(one_second_of_questions, partial(answers_served, tmp), "the question")
    until_recorded(one_stream, partial(streams_served, direct.stream_port), "the stream")
    for turn in range(plan.wrk_repeats):
        for route in rotated(routes, turn):
            pid = route.http_pid
            cpu_before = measure.cpu_seconds(pid) if pid else 0.0
            served_before = answers_served(tmp)
            run = measure.run_wrk(
                f"http://127.0.0.1:{route.http_port}{servers.ANSWER_PATH}",
                connections=1,
                seconds=plan.wrk_seconds,
                script=script,
            )
            if route is replay and answers_served(tmp) != served_before:
                raise RuntimeError("a replayed question reached the origin")
            samples.add(route, "answer4k_c1_p50_ms", run.p50_ms)
            samples.add(route, "answer4k_c1_p99_ms", run.p99_ms)
            if run.errors:
                samples.peak(route, "answer4k_c1_errors", run.errors)
            if pid:
                cpu_s = measure.cpu_seconds(pid) - cpu_before
                samples.add(route, "answer4k_cpu_us_per_req", cpu_s * 1e6 / max(1, run.requests))
    for turn in range(plan.sse_streams):
        for route in rotated(routes, turn):
            served_before = streams_served(direct.stream_port)
            url = f"http://127.0.0.1:{route.stream_port}/sse"
            run_sse = asyncio.run(measure.read_sse(url, events=REPLAY_EVENTS, gap_s=plan.sse_gap_s))
            if route is replay and streams_served(direct.stream_port) != served_before:
                raise RuntimeError("a replayed stream reached the stream upstream")
            samples.add(route, "answer_stream_first_event_ms", run_sse.first_event_ms)


# Kinds of measurement, in the order a run makes them (``--only`` picks some).
KINDS = ("transfers", "sse", "websocket", "small", "cache")
REPLAYED = "trayproxy-replay"
REPLAY_EVENTS = 20  # events in the stream replayed by the cache figures
RECORD_TRIES = 20


def measure_all(
    routes: list[Route], plan: Plan, tmp: Path, source: Path, kinds: tuple[str, ...] = KINDS
) -> dict[str, dict[str, float]]:
    """Every kind asked for; ``tmp`` is the run's directory (the servers' files), ``source`` the
    file uploads send."""
    samples = Samples()
    every_route = routes
    # Only the cache figures go through the replaying instance.
    routes = [route for route in routes if route.name != REPLAYED]
    # One request each first: every path works, and idle memory is read after the proxy has
    # handled a request (imports done, pools made), as a user would see it.
    for route in routes:
        measure.get_small(f"http://127.0.0.1:{route.http_port}/small")
        if route.http_pid:
            samples.add(route, "rss_idle_mib", measure.memory_kib(route.http_pid, "VmRSS") / 1024)
    steps = (
        ("transfers", lambda: measure_transfers(routes, plan, source, samples)),
        ("SSE", lambda: measure_sse(routes, plan, samples)),
        ("WebSocket", lambda: measure_websockets(routes, plan, samples)),
        ("small requests", lambda: measure_small(routes, plan, samples)),
        ("recorded answers", lambda: measure_replay(every_route, plan, tmp, samples)),
    )
    for kind, (name, step) in zip(KINDS, steps, strict=True):
        if kind not in kinds:
            continue
        started = time.monotonic()
        step()
        print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    figures = samples.summary()
    direct = figures["direct"]
    for name, path_figures in figures.items():
        if name != "direct" and "sse_delay_p50_ms" in direct and "sse_delay_p50_ms" in path_figures:
            path_figures["sse_added_p50_ms"] = path_figures["sse_delay_p50_ms"] - direct["sse_delay_p50_ms"]
            path_figures["sse_added_p99_ms"] = path_figures["sse_delay_p99_ms"] - direct["sse_delay_p99_ms"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="every path and figure, briefly (seconds)")
    parser.add_argument(
        "--wrk-seconds", type=int, help=f"duration of one wrk run (default {FULL.wrk_seconds})"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"wrk runs per figure and path (default {FULL.wrk_repeats})"
    )
    parser.add_argument(
        "--trayproxy",
        metavar="COMMAND",
        help="command that runs the TrayProxy CLI, e.g. 'python -m desktop' from another checkout"
        " (default: this environment's trayproxy)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=KINDS,
        help="measure only this kind (repeatable; default: all), for a quick A/B of one change",
    )
    parser.add_argument(
        "--with-routes",
        action="store_true",
        help="TrayProxy serves a config whose other targets claim path prefixes (routes the"
        " requests do not use), to compare the routed path with the one-target path",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for each `trayproxy serve` (repeatable), e.g. --serve-arg=--no-inspector",
    )
    parser.add_argument(
        "--json", type=Path, help="where to write the JSON (default: results/bench-<time>.json)"
    )
    args = parser.parse_args()
    missing = [tool for tool in NEEDED_TOOLS if not shutil.which(tool)]
    if missing:
        print(f"missing {', '.join(missing)}: run tests/bench/deps.sh", file=sys.stderr)
        return 2
    plan = SMOKE if args.smoke else FULL
    if args.wrk_seconds or args.repeats:
        plan = replace(
            plan,
            wrk_seconds=args.wrk_seconds or plan.wrk_seconds,
            wrk_repeats=args.repeats or plan.wrk_repeats,
        )
    trayproxy = shlex.split(args.trayproxy) if args.trayproxy else servers.trayproxy_command()
    kinds = tuple(args.only or KINDS)
    # SIGTERM would end Python without unwinding; as an exit, every server started gets stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    pinning = servers.pin_this_process()
    machine = report.describe_machine(pinning, checkout=not args.trayproxy)
    if args.trayproxy:
        machine["trayproxy"] = f"{args.trayproxy} (in {Path.cwd()})"
    if args.with_routes:
        machine["trayproxy config"] = "prefix routes, not taken by the requests"
    if args.serve_arg:
        machine["trayproxy serve arguments"] = " ".join(args.serve_arg)
    started = time.monotonic()
    # tmpfs when there is one: the download file and the upload sink then cost no disk I/O.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="trayproxy-bench-", dir=shm if shm.is_dir() else None) as tmpdir:
        tmp = Path(tmpdir)
        source = servers.write_download_file(tmp, plan.transfer_bytes)
        with servers.all_paths(
            tmp,
            pinning,
            trayproxy,
            with_routes=args.with_routes,
            serve_args=tuple(args.serve_arg),
            with_replay="cache" in kinds,
        ) as routes:
            print(
                f"measuring {', '.join(r.name for r in routes)} ({'smoke' if args.smoke else 'full'})",
                file=sys.stderr,
            )
            tray_pid = next(route.http_pid for route in routes if route.name == "trayproxy")
            # Installed is not used: the engine picks its loop; uvloop's extension in the
            # process's memory map says which it picked.
            machine["trayproxy loop"] = "uvloop" if measure.has_loaded(tray_pid, "/uvloop/") else "asyncio"
            figures = measure_all(routes, plan, tmp, source, kinds)
    machine["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = {
        "machine": machine,
        "plan": asdict(plan),
        "command": " ".join(sys.argv),
        "seconds": round(time.monotonic() - started, 1),
        "figures": figures,
        "ratios": report.ratios(figures),
        "replay_ratios": report.replay_ratios(figures),
    }
    print(report.markdown(results))
    out = (
        args.json or RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-smoke' if args.smoke else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
