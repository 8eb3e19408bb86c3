"""Benchmark servers: the upstream and the three proxies, started on free 127.0.0.1 ports.

The upstream is two processes on the load core: an nginx "origin" (static small responses, a
file to download, WebDAV PUT as an upload sink that reads every byte before it answers) and
``stream_upstream.py`` (aiohttp: SSE and WebSocket echo), so that nothing Python sits in the
small-request or transfer path of the upstream. The proxies run on the proxy core, each with
routes to both: nginx (one worker, buffering off, upstream keep-alive), Caddy (GOMAXPROCS=1)
and ``trayproxy serve -q``. None of them writes an access log (the origin logs its 4 KiB answers
only, to count them). TrayProxy forwards everything
to one target, so it runs twice: one instance in front of the origin (whose CPU and memory are
measured), one in front of the stream upstream; for the recorded-answers figures, two more
with ``--cache replay``.

Nothing here measures; ``measure.py`` does. Every process logs to a file in the run's
temporary directory, whose tail is shown when a process dies or never listens.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STREAM_UPSTREAM = HERE / "stream_upstream.py"
# Wall time a server gets to listen; Caddy and the Python processes take about a second on a
# loaded machine.
LISTEN_TIMEOUT_S = 20.0
# Both nginx instances and Caddy keep this many idle connections to each upstream: wrk's
# 64 connections then never wait for a new upstream connection.
UPSTREAM_KEEPALIVE = 64


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the proxy under test gets and which everything else gets."""

    proxy_cpu: int | None  # None: only one CPU is usable, nothing is pinned
    load_cpu: int | None
    note: str

    def prefix(self) -> list[str]:
        """The command prefix that puts a proxy on its own CPU."""
        return ["taskset", "-c", str(self.proxy_cpu)] if self.proxy_cpu is not None else []


def pin_this_process() -> Pinning:
    """Put this process (and so the upstream, wrk, curl, clients) on one CPU, the proxy on another."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        why = "one usable CPU" if len(cpus) < 2 else "no taskset"
        return Pinning(None, None, f"not pinned ({why}): proxy and load share the CPU, figures are lower")
    load_cpu, proxy_cpu = cpus[0], cpus[1]
    os.sched_setaffinity(0, {load_cpu})
    return Pinning(
        proxy_cpu, load_cpu, f"proxy on CPU {proxy_cpu}; upstream, load and clients on CPU {load_cpu}"
    )


@dataclass(frozen=True)
class Route:
    """One way to the upstream: ``http_port`` takes small requests and transfers, ``stream_port``
    SSE and WebSockets (the same port, except for TrayProxy's two instances)."""

    name: str
    http_port: int
    stream_port: int
    http_pid: int | None  # the proxy whose CPU and memory are measured; None for direct


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NGINX_MAIN = """\
worker_processes 1;
daemon off;
master_process off;
error_log {log} warn;
pid {tmp}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{body}
}}
"""

# The small response is the size of an empty OpenAI model list. The upload sink is WebDAV PUT:
# nginx reads the whole body (into a temporary file in tmpfs, then renamed) before answering,
# unlike `return`, which answers first and discards the body afterwards.
ORIGIN_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location = /small {{ default_type application/json; return 200 '{{"object":"list","data":[]}}'; }}
        location /files/ {{ alias {tmp}/files/; }}
        location /upload/ {{
            root {tmp};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
        location = {answer_path} {{
            access_log {tmp}/answers.log;
            root {tmp}/answers;
            default_type application/json;
            error_page 405 =200 $uri;
        }}
    }}
"""

# The recorded-answers figures: a chat completion whose answer is ANSWER_BYTES long, asked with a
# small POST. The origin logs only these, so a run can tell that a replayed answer never reached
# it. It is a file (a string in nginx's config is at most 4 KiB): nginx answers a POST to a file
# 405, which error_page turns into the file itself, once, as a GET.
ANSWER_PATH = "/v1/chat/completions"
ANSWER_BYTES = 4096
ANSWER_LOG = "answers.log"
QUESTION = b'{"model":"bench-model","messages":[{"role":"user","content":"Say the same thing again."}]}'


def answer_body() -> bytes:
    """A non-streamed chat completion of exactly ANSWER_BYTES bytes."""
    document = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 800, "total_tokens": 812},
    }
    room = ANSWER_BYTES - len(json.dumps(document, separators=(",", ":")).encode())
    document["choices"][0]["message"]["content"] = ("the same answer " * ANSWER_BYTES)[:room]
    encoded = json.dumps(document, separators=(",", ":")).encode()
    assert len(encoded) == ANSWER_BYTES
    return encoded


def write_answer_file(tmp: Path) -> None:
    """The origin's answer to ANSWER_PATH."""
    path = tmp / "answers" / ANSWER_PATH.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_bytes(answer_body())

NGINX_PROXY_SERVER = """\
    upstream origin {{ server 127.0.0.1:{origin}; keepalive {keepalive}; }}
    upstream stream {{ server 127.0.0.1:{stream}; keepalive {keepalive}; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 1h;
        location /sse {{ proxy_set_header Connection ""; proxy_pass http://stream; }}
        location /ws {{
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection upgrade;
            proxy_pass http://stream;
        }}
        location / {{ proxy_set_header Connection ""; proxy_pass http://origin; }}
    }}
"""

# flush_interval -1 flushes every write (Caddy does so for text/event-stream anyway); WebSocket
# upgrades need no option. keepalive_idle_conns_per_host matches nginx's `keepalive` above.
CADDYFILE = """\
{{
    admin off
    auto_https off
    servers {{
        protocols h1
    }}
}}
:{port} {{
    bind 127.0.0.1
    @stream path /sse* /ws*
    reverse_proxy @stream 127.0.0.1:{stream} {{
        flush_interval -1
        transport http {{
            keepalive_idle_conns_per_host {keepalive}
        }}
    }}
    reverse_proxy 127.0.0.1:{origin} {{
        transport http {{
            keepalive_idle_conns_per_host {keepalive}
        }}
    }}
}}
"""


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ServerFailed(RuntimeError):
    """A server exited or never listened; the message carries the end of its log."""


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{proc.args} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerFailed(f"{proc.args} does not listen on {port} after {LISTEN_TIMEOUT_S}s:\n{log_tail(log)}")


def stop_with_parent() -> None:
    """In the child before exec: SIGTERM it when the benchmark dies, even by SIGKILL (prctl(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def running(
    args: list[str], *, port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until it listens on ``port``; stop it on exit."""
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            preexec_fn=stop_with_parent,  # safe: servers are started from the main thread only
        )
    try:
        wait_for_port(port, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nginx_command(tmp: Path, name: str, body: str) -> list[str]:
    conf = tmp / f"{name}.conf"
    conf.write_text(NGINX_MAIN.format(tmp=tmp, name=name, log=tmp / f"{name}.log", body=body))
    return [shutil.which("nginx") or "nginx", "-q", "-c", str(conf), "-p", str(tmp)]


def private_env(tmp: Path) -> dict[str, str]:
    """The environment for Caddy and TrayProxy: HOME and XDG dirs inside the run's directory."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["HOME"] = str(tmp / "home")
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(tmp / "home" / var.lower())
    env["XDG_RUNTIME_DIR"] = str(tmp / "home" / "runtime")
    for path in (env["HOME"], env["XDG_RUNTIME_DIR"]):
        Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
    return env


def trayproxy_command() -> list[str]:
    """The real CLI of the environment running the benchmark (``.venv/bin/trayproxy``)."""
    script = Path(sys.executable).with_name("trayproxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "desktop"]


def write_download_file(tmp: Path, size: int) -> Path:
    """Random bytes (no compression could shortcut them), served by the origin as /files/big."""
    (tmp / "files").mkdir()
    (tmp / "upload").mkdir()
    path = tmp / "files" / "big"
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    return path


def routed_config(upstream: int) -> str:
    """A config whose chosen target is the upstream and whose other targets claim path
    prefixes (one with a fallback), none of which the benchmark's requests use."""
    url = f"http://127.0.0.1:{upstream}"
    return (
        'active = "origin"\n\n'
        f'[targets.origin]\nurl = "{url}"\n\n'
        f'[targets.side]\nurl = "{url}"\nprefix = ["/side", "/other/v1"]\nfallbacks = ["spare"]\n\n'
        f'[targets.spare]\nurl = "{url}"\nprefix = "/spare"\n'
    )


@contextmanager
def all_paths(
    tmp: Path,
    pinning: Pinning,
    trayproxy: list[str],
    *,
    with_routes: bool = False,
    serve_args: tuple[str, ...] = (),
    with_replay: bool = False,
) -> Iterator[list[Route]]:
    """Start the upstream and every proxy; yield the paths in the order direct, nginx, caddy,
    trayproxy, and with ``with_replay`` a fifth, trayproxy-replay: `trayproxy serve --cache
    replay` (recorded answers, replayed as fast as the client reads) in front of the same upstreams.

    ``trayproxy`` is the command that runs the CLI (usually ``trayproxy_command()``). With
    ``with_routes`` TrayProxy serves a config file whose targets claim path prefixes the
    benchmark never asks for (see ``routed_config``), so every request takes the routed path to
    the chosen target instead of the one-target path. ``serve_args`` go to each `trayproxy
    serve` (``--no-inspector`` for an A/B of the inspector's capture).
    """
    origin, stream, nginx_port, caddy_port = (free_port() for _ in range(4))
    tray_http, tray_stream = free_port(), free_port()
    env = private_env(tmp)
    pin = pinning.prefix()
    with ExitStack() as stack:

        def start(args: list[str], port: int, name: str, env: dict[str, str] | None = None) -> int:
            proc = stack.enter_context(running(args, port=port, log=tmp / f"{name}.log", env=env))
            return proc.pid

        write_answer_file(tmp)
        origin_server = ORIGIN_SERVER.format(port=origin, tmp=tmp, answer_path=ANSWER_PATH)
        start(nginx_command(tmp, "origin", origin_server), origin, "origin")
        start([sys.executable, str(STREAM_UPSTREAM), str(stream)], stream, "stream")
        proxy_body = NGINX_PROXY_SERVER.format(
            port=nginx_port, origin=origin, stream=stream, keepalive=UPSTREAM_KEEPALIVE
        )
        nginx_pid = start([*pin, *nginx_command(tmp, "nginx-proxy", proxy_body)], nginx_port, "nginx-proxy")
        caddyfile = tmp / "Caddyfile"
        caddyfile.write_text(
            CADDYFILE.format(port=caddy_port, origin=origin, stream=stream, keepalive=UPSTREAM_KEEPALIVE)
        )
        caddy = [
            *pin,
            shutil.which("caddy") or "caddy",
            "run",
            "--config",
            str(caddyfile),
            "--adapter",
            "caddyfile",
        ]
        caddy_pid = start(caddy, caddy_port, "caddy", env={**env, "GOMAXPROCS": "1"})

        def serve(name: str, upstream: int, *more: str) -> list[str]:
            config = tmp / f"{name}.toml"
            command = [
                *pin,
                *trayproxy,
                "serve",
                "-q",
                *serve_args,
                *more,
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
            ]
            if not with_routes:
                return [*command, "--target", f"http://127.0.0.1:{upstream}"]
            config.write_text(routed_config(upstream))
            return command

        tray_http_pid = start(
            [*serve("trayproxy-http", origin), "--port", str(tray_http)], tray_http, "trayproxy-http", env=env
        )
        start(
            [*serve("trayproxy-stream", stream), "--port", str(tray_stream)],
            tray_stream,
            "trayproxy-stream",
            env=env,
        )
        routes = [
            Route("direct", origin, stream, None),
            Route("nginx", nginx_port, nginx_port, nginx_pid),
            Route("caddy", caddy_port, caddy_port, caddy_pid),
            Route("trayproxy", tray_http, tray_stream, tray_http_pid),
        ]
        if with_replay:
            replay_http, replay_stream = free_port(), free_port()
            # Each its own cache folder: a recording is the file of the one process writing it.
            replay_http_pid = start(
                [*serve("replay-http", origin, "--cache", "replay"), "--port", str(replay_http)],
                replay_http,
                "replay-http",
                env={**env, "XDG_CACHE_HOME": str(tmp / "replay-http-cache")},
            )
            start(
                [*serve("replay-stream", stream, "--cache", "replay"), "--port", str(replay_stream)],
                replay_stream,
                "replay-stream",
                env={**env, "XDG_CACHE_HOME": str(tmp / "replay-stream-cache")},
            )
            routes.append(Route("trayproxy-replay", replay_http, replay_stream, replay_http_pid))
        yield routes
