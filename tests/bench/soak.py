"""Soak: the real ``trayproxy serve`` under steady traffic while its config file is edited.

    .venv/bin/python tests/bench/soak.py --minutes 3
    PYTHONPATH=/path/to/other/tree .venv/bin/python tests/bench/soak.py --minutes 3

The second form runs that tree's ``desktop`` package (the first line printed says which one
ran); the soak itself is the same. Linux only (it reads /proc); everything is on 127.0.0.1.

What runs: two upstream targets, "one" and "two" (``soak_upstream.py``, a process of its own;
each serves plain HTTP, SSE and a WebSocket echo, naming itself), and ``python -m desktop serve
--config FILE`` with both, "two" also on a port of its own. Clients keep busy on the main port
and on "two"'s port: plain requests (GET, and POST with a body whose digest must come back),
SSE streams read to their last event, WebSocket sessions whose every echo must match. Every
few seconds the soak edits the file as a person would (a whole new file renamed over the old):
it switches ``active``, moves "two"'s port away and back, moves the main port, toggles an allowed
host, and between rounds touches nothing for a while. After each edit it waits until the edit
shows from outside (the other target answers, the new port accepts and the old one refuses,
the host is let in or refused on both ports), which gives the time each edit took to apply.

What counts as a failure: any answer other than the complete expected one (status, body,
digest, every SSE event in order, every echo), a timeout, an edit not applied within
EDIT_TIMEOUT_S. Clients follow a port the soak moved as soon as the new port accepts. Two
things a move does on purpose are counted apart, not as failures: a connection refused, or closed
before any answer, by the port being moved away (the client then retries on the new port), and
a WebSocket on that port told 1001 (README, "Edits apply at once": "open WebSockets are told
1001 so they reconnect"). A request already answering on the old port must finish there.

The proxy's resident memory (VmRSS) and open file descriptors are read from /proc: idle (after
a warm-up, once the fd count has settled), the peak under load, and after the load has stopped
and the count has settled again. Exit status 1 when anything failed or the fds are not back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import aiohttp
import measure
import servers
from soak_upstream import PAD_BYTES

UPSTREAM = Path(__file__).resolve().with_name("soak_upstream.py")
# Which target answers on the soak's own port: always "two", whatever `active` says.
OWN_TARGET = "two"
# The Host name the soak adds to and removes from [security] allowed_hosts. A .localhost name,
# so the proxy has no warning to give about it (browsers mark requests to it).
TOGGLED_HOST = "soak.localhost"
# A request (or a whole SSE stream, or one WebSocket echo) taking longer than this failed.
REQUEST_TIMEOUT_S = 30.0
# An edit must show from outside within this: the watcher looks once a second, and a move's
# old port closes at once (its open requests finish in the background).
EDIT_TIMEOUT_S = 15.0
# How often the soak looks whether an edit shows yet; the figures it gives are this coarse.
PROBE_INTERVAL_S = 0.02
# The fd count has settled when it has not changed for this long. The proxy closes an idle
# upstream connection after engine/upstream.py's IDLE_KEEPALIVE_S (4 s), but aiohttp's
# connector looks for idle ones only once per that interval, so one lives up to 8 s: after
# 10 s without a change, none of the load's is left. After the load, waiting also ends as soon
# as the count is back to idle; in any case after SETTLE_LIMIT_S.
SETTLE_STABLE_S = 10.0
SETTLE_LIMIT_S = 60.0
SAMPLE_INTERVAL_S = 0.5
# Per client: the pause between two plain requests (the soak is steady use, not a stress test
# on a machine others share), SSE events and their gap, echoes per WebSocket session.
PLAIN_PAUSE_S = 0.01
POST_BYTES = 8 * 1024
SSE_EVENTS = 20
SSE_GAP_S = 0.02
WS_ECHOES = 20
WS_ECHO_PAUSE_S = 0.01
# Clients per port and kind: (main port, "two"'s own port).
CLIENTS = {"plain": (3, 1), "sse": (2, 1), "ws": (2, 1)}
KINDS = ("plain", "sse", "ws")
KIND_NAMES = {
    "plain": "HTTP GET/POST",
    "sse": f"SSE streams ({SSE_EVENTS} events)",
    "ws": "WebSocket sessions",
}
# RFC 6455 §7.4.1: "going away", what the proxy tells open WebSockets on a port it leaves.
GOING_AWAY = 1001
# The edits a run makes at least once, however short (the first four of a round).
EDIT_KINDS = {"switch active", "move own port", "move main port", "toggle allowed host"}
# Failures kept word for word, per kind, for the report.
KEPT_FAILURES = 5


# --- what the clients count


@dataclass
class Tally:
    """Requests, failures and the two counted-apart outcomes of a move, by kind."""

    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    # Refused or closed unanswered by a port being moved away; retried on the new port.
    retried: Counter[str] = field(default_factory=Counter)
    # Why, by exception type: "ClientConnectorError", "ServerDisconnectedError", ...
    retried_why: Counter[str] = field(default_factory=Counter)
    # Completed on a port the soak moved away from while they were open.
    finished_after_move: Counter[str] = field(default_factory=Counter)
    ws_going_away: int = 0
    ws_echoes: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, kind: str, message: str) -> None:
        self.failed[kind] += 1
        kept = self.samples.setdefault(kind, [])
        if len(kept) < KEPT_FAILURES:
            kept.append(message)


class Unanswered(Exception):
    """The connection was refused or closed before any answer (no status line read)."""


class Wrong(Exception):
    """An answer came, but not the complete expected one."""


class GoingAway(Exception):
    """The proxy closed a WebSocket with 1001."""


@dataclass
class Port:
    """Where clients of one listener connect; the editor moves it."""

    role: str  # "main" or "own"
    port: int
    moving: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.settled.set()

    async def moved_from(self, port: int) -> bool:
        """Whether ``port`` is one the editor moved this listener away from (waiting for a move
        under way to show first)."""
        if self.port == port and self.moving:
            try:
                await asyncio.wait_for(self.settled.wait(), EDIT_TIMEOUT_S)
            except TimeoutError:
                return False
        return self.port != port


# --- the clients


# Errors that mean no answer came at all: refused, reset or closed before the status line.
UNANSWERED = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def send(request: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
    """The response's head, or Unanswered."""
    try:
        return await request
    except UNANSWERED as exc:
        raise Unanswered(type(exc).__name__) from exc


async def plain_request(session: aiohttp.ClientSession, port: int, expected: set[str], turn: int) -> None:
    """GET /plain or POST /echo with a random body; raise unless the complete answer came."""
    url = f"http://127.0.0.1:{port}"
    body = os.urandom(POST_BYTES) if turn % 2 else b""
    response = await send(session.post(f"{url}/echo", data=body) if body else session.get(f"{url}/plain"))
    async with response:
        try:
            raw = await response.read()
        except aiohttp.ClientError as exc:
            raise Wrong(f"body cut: {exc!r}") from exc
    if response.status != 200:
        raise Wrong(f"HTTP {response.status}: {raw[:200]!r}")
    answer = json.loads(raw)
    if answer.get("upstream") not in expected:
        raise Wrong(f"answered by {answer.get('upstream')!r}, not {sorted(expected)}")
    if body:
        if (answer["size"], answer["sha256"]) != (len(body), hashlib.sha256(body).hexdigest()):
            raise Wrong(f"echo of {answer['size']} bytes, not {len(body)}, or another digest")
    elif len(answer.get("pad", "")) != PAD_BYTES:
        raise Wrong("short /plain body")


async def sse_stream(session: aiohttp.ClientSession, port: int, expected: set[str], turn: int) -> None:
    """One stream read to its end: SSE_EVENTS numbered events from one upstream, then [DONE]."""
    response = await send(session.get(f"http://127.0.0.1:{port}/sse?n={SSE_EVENTS}&gap={SSE_GAP_S}"))
    events: list[dict[str, object]] = []
    done = False
    async with response:
        if response.status != 200 or response.content_type != "text/event-stream":
            raise Wrong(f"HTTP {response.status} {response.content_type}")
        try:
            async for line in response.content:
                if line == b"data: [DONE]\n":
                    done = True
                elif line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
        except aiohttp.ClientError as exc:
            raise Wrong(f"stream cut after {len(events)} events: {exc!r}") from exc
    upstreams = {event.get("upstream") for event in events}
    if [event.get("i") for event in events] != list(range(SSE_EVENTS)) or not done:
        raise Wrong(f"{len(events)} events{'' if done else ' and no [DONE]'}")
    if len(upstreams) != 1 or not upstreams <= expected:
        raise Wrong(f"events from {upstreams}, not one of {sorted(expected)}")


def websocket_session(tally: Tally) -> Callable[[aiohttp.ClientSession, int, set[str], int], Awaitable[None]]:
    async def session_once(session: aiohttp.ClientSession, port: int, expected: set[str], turn: int) -> None:
        """Open, WS_ECHOES echoes that must match, close with 1000."""
        try:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws")
        except UNANSWERED as exc:
            raise Unanswered(type(exc).__name__) from exc
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 503:
                # A handshake on a connection the port accepted just before it moved is answered
                # "stopping" (a WebSocket opened there would be cut): the client connects again,
                # as to a refused port. Counted as retried only when the port did move.
                raise Unanswered("handshake answered 503 stopping") from exc
            raise Wrong(f"handshake: HTTP {exc.status}") from exc
        try:
            for index in range(WS_ECHOES):
                sent = f"{turn}-{index}-{'y' * 200}"
                # A send fails when the proxy has closed the socket: why is in its close frame, read next.
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await ws.send_str(sent)
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT and msg.data == sent:
                    tally.ws_echoes += 1
                    await asyncio.sleep(WS_ECHO_PAUSE_S)
                    continue
                # The close frame's code; close_code says 1006 when the send above failed.
                if (
                    msg.type is aiohttp.WSMsgType.CLOSE and msg.data == GOING_AWAY
                ) or ws.close_code == GOING_AWAY:
                    raise GoingAway()
                raise Wrong(
                    f"echo {index}: {msg.type.name} {str(msg.data)[:80]!r} (close code {ws.close_code})"
                )
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise Wrong(f"session cut: {exc!r}") from exc
        finally:
            closed_now = await ws.close()
        if not closed_now:
            raise Wrong(f"closed by the proxy before the client (code {ws.close_code})")

    return session_once


Exchange = Callable[[aiohttp.ClientSession, int, set[str], int], Awaitable[None]]


async def client(
    kind: str, exchange: Exchange, target: Port, expected: set[str], tally: Tally, stop: asyncio.Event
) -> None:
    """Run ``exchange`` again and again against ``target``'s current port until ``stop``."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        turn = 0
        while not stop.is_set():
            turn += 1
            port = target.port
            try:
                await asyncio.wait_for(exchange(session, port, expected, turn), REQUEST_TIMEOUT_S)
            except Unanswered as exc:
                if await target.moved_from(port):
                    tally.retried[kind] += 1
                    tally.retried_why[str(exc)] += 1
                    continue
                tally.fail(kind, f"port {port} ({target.role}): no answer: {exc}")
            except GoingAway:
                if await target.moved_from(port):
                    tally.ws_going_away += 1
                    continue
                tally.fail(kind, f"port {port} ({target.role}): told 1001 without a move")
            except Wrong as exc:
                tally.fail(kind, f"port {port} ({target.role}): {exc}")
            except TimeoutError:
                tally.fail(
                    kind, f"port {port} ({target.role}): no complete answer in {REQUEST_TIMEOUT_S:g} s"
                )
            else:
                tally.done[kind] += 1
                if target.port != port:
                    tally.finished_after_move[kind] += 1
            if kind == "plain":
                await asyncio.sleep(PLAIN_PAUSE_S)


def start_clients(main: Port, own: Port, tally: Tally, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    exchanges: dict[str, Exchange] = {
        "plain": plain_request,
        "sse": sse_stream,
        "ws": websocket_session(tally),
    }
    tasks = []
    for kind, (on_main, on_own) in CLIENTS.items():
        for target, count, expected in ((main, on_main, {"one", "two"}), (own, on_own, {OWN_TARGET})):
            for index in range(count):
                coro = client(kind, exchanges[kind], target, expected, tally, stop)
                tasks.append(asyncio.create_task(coro, name=f"{kind}-{target.role}-{index}"))
    return tasks


# --- the config file and its editor


@dataclass(frozen=True)
class Settings:
    """What the soak changes in the file."""

    active: str
    main_port: int
    own_port: int
    allow_toggled_host: bool

    def toml(self, upstreams: dict[str, int]) -> str:
        hosts = f'["{TOGGLED_HOST}"]' if self.allow_toggled_host else "[]"
        return (
            f'active = "{self.active}"\n\n'
            f'[listen]\nhosts = ["127.0.0.1"]\nport = {self.main_port}\n\n'
            f"[security]\nallowed_hosts = {hosts}\n\n"
            # No request lines: thousands of them would measure the log, not the proxy.
            "[log]\naccess = false\n\n"
            f'[targets.one]\nurl = "http://127.0.0.1:{upstreams["one"]}"\n\n'
            f'[targets.two]\nurl = "http://127.0.0.1:{upstreams["two"]}"\nport = {self.own_port}\n'
        )


def write_atomically(path: Path, text: str) -> None:
    """As editors save: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


async def accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def answered_by(port: int, host: str | None = None) -> tuple[int, str | None]:
    """Status and upstream of one GET /plain on a new connection."""
    headers = {"Host": host} if host else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        try:
            async with session.get(f"http://127.0.0.1:{port}/plain", headers=headers) as response:
                body = await response.read()
        except aiohttp.ClientError:
            return 0, None
    if response.status != 200:
        return response.status, None
    return 200, json.loads(body).get("upstream")


async def until(check: Callable[[], Awaitable[bool]]) -> bool:
    deadline = time.monotonic() + EDIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(PROBE_INTERVAL_S)
    return False


class Editor:
    """Edits the file step by step and waits until each edit shows from outside."""

    def __init__(self, path: Path, upstreams: dict[str, int], start: Settings, main: Port, own: Port) -> None:
        self.path, self.upstreams, self.start = path, upstreams, start
        self.now = start
        self.main, self.own = main, own
        self.applied_ms: dict[str, list[float]] = {}
        self.failed: list[str] = []

    async def edit(self, what: str, wanted: Settings) -> None:
        """Write ``wanted``; wait for each change it makes to show; note how long that took."""
        before, self.now = self.now, wanted
        moves = [
            (port, new_port)
            for port, new_port, old_port in (
                (self.main, wanted.main_port, before.main_port),
                (self.own, wanted.own_port, before.own_port),
            )
            if new_port != old_port
        ]
        checks: list[tuple[str, Callable[[], Awaitable[bool]]]] = []
        if wanted.active != before.active:
            checks.append((f"main port answered by {wanted.active}", lambda: self._answers(wanted.active)))
        if wanted.allow_toggled_host != before.allow_toggled_host:
            status = 200 if wanted.allow_toggled_host else 403
            checks.append(
                (f"Host {TOGGLED_HOST} gets {status} on both ports", lambda: self._host_gets(status))
            )
        for port, _ in moves:
            port.moving = True
            port.settled.clear()
        written = time.monotonic()
        write_atomically(self.path, wanted.toml(self.upstreams))
        try:
            for port, new_port in moves:
                old_port = port.port
                if not await until(partial(accepts, new_port)):
                    self.failed.append(f"{what}: port {new_port} does not accept within {EDIT_TIMEOUT_S:g} s")
                    continue
                # Clients follow at once; the move has shown once the old port refuses.
                port.port, port.moving = new_port, False
                port.settled.set()
                if not await until(partial(refuses, old_port)):
                    self.failed.append(
                        f"{what}: old port {old_port} still accepts after {EDIT_TIMEOUT_S:g} s"
                    )
            for description, check in checks:
                if not await until(check):
                    self.failed.append(f"{what}: {description}: not within {EDIT_TIMEOUT_S:g} s")
        finally:
            for port, _ in moves:
                port.moving = False
                port.settled.set()
        self.applied_ms.setdefault(what, []).append((time.monotonic() - written) * 1000)

    async def _answers(self, name: str) -> bool:
        return (await answered_by(self.main.port))[1] == name

    async def _host_gets(self, status: int) -> bool:
        for port in (self.main.port, self.own.port):
            if (await answered_by(port, f"{TOGGLED_HOST}:{port}"))[0] != status:
                return False
        return True

    async def run(self, deadline: float, edit_gap_s: float, idle_s: float) -> None:
        """Rounds of edits until ``deadline``, but at least each kind once; then the starting
        file again."""
        made: set[str] = set()
        while time.monotonic() < deadline or not made >= EDIT_KINDS:
            steps: list[tuple[str, Callable[[Settings], Settings] | None]] = [
                # Each kind of edit once first, so that a short run has made them all.
                ("switch active", lambda s: replace(s, active="two" if s.active == "one" else "one")),
                ("move own port", lambda s: replace(s, own_port=servers.free_port())),
                ("move main port", lambda s: replace(s, main_port=servers.free_port())),
                ("toggle allowed host", lambda s: replace(s, allow_toggled_host=not s.allow_toggled_host)),
                ("switch active back", lambda s: replace(s, active=self.start.active)),
                ("own port back", lambda s: replace(s, own_port=self.start.own_port)),
                ("main port back", lambda s: replace(s, main_port=self.start.main_port)),
                (
                    "toggle allowed host back",
                    lambda s: replace(s, allow_toggled_host=not s.allow_toggled_host),
                ),
                ("touch nothing", None),
            ]
            for what, change in steps:
                if time.monotonic() >= deadline and made >= EDIT_KINDS:
                    break
                made.add(what)
                if change is None:
                    await asyncio.sleep(idle_s)
                    continue
                await self.edit(what, change(self.now))
                await asyncio.sleep(edit_gap_s)
        if self.now != self.start:
            await self.edit("back to the starting file", self.start)


async def refuses(port: int) -> bool:
    return not await accepts(port)


# --- the proxy process


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Figures:
    rss_kib: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    settle_s: dict[str, float] = field(default_factory=dict)
    # RSS under load at the end of each minute: flat, or growing with the requests served.
    rss_by_minute: list[int] = field(default_factory=list)
    # Open after the load that were not when idle, by what they are.
    extra_fds: Counter[str] = field(default_factory=Counter)


async def settle(pid: int, stable_s: float, back_to: int | None = None) -> tuple[int, float]:
    """The fd count once it has stayed the same for ``stable_s`` (or is down to ``back_to``),
    and the seconds that took."""
    started = last_change = time.monotonic()
    count = open_fds(pid)
    while (
        time.monotonic() - last_change < stable_s
        and time.monotonic() - started < SETTLE_LIMIT_S
        and (back_to is None or count > back_to)
    ):
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        now = open_fds(pid)
        if now != count:
            count, last_change = now, time.monotonic()
    return count, time.monotonic() - started


def describe_fds(pid: int) -> Counter[str]:
    """The process's open fds by what they are: a TCP socket as its local and remote address
    and state (from /proc/PID/net/tcp), anything else by its kind (pipe, anon_inode, a path)."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                sockets[inode] = f"tcp {_port(local)}->{_port(remote)} {TCP_STATES.get(state, state)}"
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                link = sockets.get(link[8:-1], "socket (not TCP)")
            elif ":" in link:
                link = link.split(":", 1)[0]
            kinds[link] += 1
    return kinds


# /proc/net/tcp's state column (include/net/tcp_states.h), those a proxy's sockets are seen in.
TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _port(hex_address: str) -> int:
    return int(hex_address.rsplit(":", 1)[1], 16)


async def sample_peaks(pid: int, figures: Figures, stop: asyncio.Event) -> None:
    """Keep the highest RSS and fd count, and the RSS at the end of each minute under load."""
    started = time.monotonic()
    while not stop.is_set():
        rss_kib = measure.memory_kib(pid, "VmRSS")
        figures.rss_kib["peak"] = max(figures.rss_kib.get("peak", 0), rss_kib)
        figures.fds["peak"] = max(figures.fds.get("peak", 0), open_fds(pid))
        if time.monotonic() - started >= 60 * (len(figures.rss_by_minute) + 1):
            figures.rss_by_minute.append(rss_kib)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


@contextmanager
def process(
    args: list[str], *, ports: list[int], log: Path, env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, wait until it listens on every one of ``ports``; stop it on exit."""
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            cwd=cwd,
            preexec_fn=servers.stop_with_parent,  # safe: started from the main thread only
        )
    try:
        for port in ports:
            servers.wait_for_port(port, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(servers.LISTEN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def which_desktop(env: dict[str, str], cwd: Path) -> str:
    """Where the proxy's ``desktop`` package comes from, with its checkout's commit."""
    package = subprocess.run(
        [sys.executable, "-c", "import desktop, pathlib; print(pathlib.Path(desktop.__file__).parent)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    described = subprocess.run(
        ["git", "-C", package, "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return f"{package} ({described or 'not a git checkout'})"


# --- the run


@dataclass
class Options:
    seconds: float
    warmup_s: float
    edit_gap_s: float
    idle_s: float
    settle_s: float
    # False: the fd counts are read as they are, neither settled nor judged (--quick).
    judge_fds: bool = True


async def drive(
    pid: int, editor: Editor, main: Port, own: Port, options: Options, tally: Tally, figures: Figures
) -> None:
    if options.warmup_s > 0:
        stop = asyncio.Event()
        tasks = start_clients(main, own, tally, stop)
        await asyncio.sleep(options.warmup_s)
        stop.set()
        await asyncio.gather(*tasks)
    if options.judge_fds:
        figures.fds["idle"], figures.settle_s["idle"] = await settle(pid, options.settle_s)
    else:
        figures.fds["idle"], figures.settle_s["idle"] = open_fds(pid), 0.0
    idle_fds = describe_fds(pid)
    figures.rss_kib["idle"] = measure.memory_kib(pid, "VmRSS")
    exact_peak = measure.reset_peak_rss(pid)
    print(
        f"idle: fds {figures.fds['idle']}, RSS {figures.rss_kib['idle'] / 1024:.1f} MiB; soaking {options.seconds:g} s",
        file=sys.stderr,
    )

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peaks(pid, figures, stop))
    tasks = start_clients(main, own, tally, stop)
    await editor.run(time.monotonic() + options.seconds, options.edit_gap_s, options.idle_s)
    stop.set()
    await asyncio.gather(*tasks, sampler)
    if exact_peak:
        figures.rss_kib["peak"] = max(figures.rss_kib["peak"], measure.memory_kib(pid, "VmHWM"))
    if options.judge_fds:
        idle = figures.fds["idle"]
        figures.fds["after"], figures.settle_s["after"] = await settle(pid, options.settle_s, idle)
    else:
        figures.fds["after"], figures.settle_s["after"] = open_fds(pid), 0.0
    figures.extra_fds = describe_fds(pid) - idle_fds
    figures.rss_kib["after"] = measure.memory_kib(pid, "VmRSS")


def report(
    tally: Tally, editor: Editor, figures: Figures, seconds: float, proxy_exit: int | None, *, judge_fds: bool
) -> bool:
    """Print the tables; True when nothing failed and the fds are back."""
    print(
        "| traffic | completed | failures | retried after a move | completed on a port moved away meanwhile |"
    )
    print("|---|---:|---:|---:|---:|")
    for kind in KINDS:
        counts = (tally.done, tally.failed, tally.retried, tally.finished_after_move)
        print(f"| {KIND_NAMES[kind]} | " + " | ".join(str(count[kind]) for count in counts) + " |")
    print(f"| WebSocket echoes | {tally.ws_echoes} | | | |")
    print(f"| WebSocket sessions told 1001 by a move | {tally.ws_going_away} | | | |")
    edits = sum(len(times) for times in editor.applied_ms.values())
    print(f"| config edits | {edits} | {len(editor.failed)} | | |")
    if tally.retried_why:
        print(
            "\nretried after a move, by error: "
            + ", ".join(f"{why} {n}" for why, n in tally.retried_why.items())
        )
    print("\n| edit | times | shows after, median ms | max ms |")
    print("|---|---:|---:|---:|")
    for what, times in editor.applied_ms.items():
        print(f"| {what} | {len(times)} | {statistics.median(times):.0f} | {max(times):.0f} |")
    rss = {phase: kib / 1024 for phase, kib in figures.rss_kib.items()}
    print("\n| proxy process | idle | peak | after |")
    print("|---|---:|---:|---:|")
    print(f"| RSS, MiB | {rss['idle']:.1f} | {rss['peak']:.1f} | {rss['after']:.1f} |")
    print(f"| open fds | {figures.fds['idle']} | {figures.fds['peak']} | {figures.fds['after']} |")
    print(
        f"\nfd count settled in {figures.settle_s['idle']:.1f} s (idle) and {figures.settle_s['after']:.1f} s (after);"
        f" soak {seconds:.0f} s; proxy exit status on SIGTERM: {proxy_exit}"
    )
    if figures.rss_by_minute:
        print(
            "RSS under load at the end of each minute, MiB: "
            + ", ".join(f"{kib / 1024:.1f}" for kib in figures.rss_by_minute)
        )
    if figures.extra_fds:
        print(
            "open after the load, not when idle: "
            + ", ".join(f"{n}x {what}" for what, n in figures.extra_fds.items())
        )
    for kind, kept in tally.samples.items():
        print(f"\n{kind} failures (first {len(kept)}):")
        for message in kept:
            print(f"  {message}")
    for message in editor.failed:
        print(f"edit failed: {message}")
    failures = sum(tally.failed.values()) + len(editor.failed)
    fds_back = figures.fds["after"] <= figures.fds["idle"]
    fds_verdict = "back" if fds_back else "NOT back"
    if not judge_fds:
        fds_back, fds_verdict = True, "not judged (--quick)"
    ok = failures == 0 and fds_back and proxy_exit == 0
    print(f"\nsoak: {'PASS' if ok else 'FAIL'} ({failures} failures; fds {fds_verdict})")
    return ok


def run(options: Options) -> bool:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="trayproxy-soak-", dir=shm if shm.is_dir() else None) as tmpdir:
        tmp = Path(tmpdir)
        env = servers.private_env(tmp)
        print(f"proxy code: {which_desktop(env, tmp)}", flush=True)
        upstreams = {"one": servers.free_port(), "two": servers.free_port()}
        start = Settings(
            active="one",
            main_port=servers.free_port(),
            own_port=servers.free_port(),
            allow_toggled_host=False,
        )
        config = tmp / "config.toml"
        write_atomically(config, start.toml(upstreams))
        upstream_args = [sys.executable, str(UPSTREAM), str(upstreams["one"]), str(upstreams["two"])]
        serve_args = [sys.executable, "-m", "desktop", "serve", "--config", str(config)]
        # The proxy runs in the temporary directory: `python -m` puts its working directory first
        # on the path, and a checkout's `desktop/` there would win over PYTHONPATH's.
        with (
            process(
                upstream_args, ports=list(upstreams.values()), log=tmp / "upstream.log", env=env, cwd=tmp
            ),
            process(
                serve_args, ports=[start.main_port, start.own_port], log=tmp / "proxy.log", env=env, cwd=tmp
            ) as proxy,
        ):
            tally, figures = Tally(), Figures()

            async def soak() -> Editor:
                main, own = Port("main", start.main_port), Port("own", start.own_port)
                editor = Editor(config, upstreams, start, main, own)
                await drive(proxy.pid, editor, main, own, options, tally, figures)
                return editor

            started = time.monotonic()
            editor = asyncio.run(soak())
            seconds = time.monotonic() - started
            proxy.terminate()
            try:
                proxy_exit: int | None = proxy.wait(servers.LISTEN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proxy_exit = None
            ok = report(tally, editor, figures, seconds, proxy_exit, judge_fds=options.judge_fds)
            if not ok:
                print(f"\nproxy log, last lines:\n{servers.log_tail(tmp / 'proxy.log', 30)}")
            return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="how long the edits and the load go on (default 3)"
    )
    parser.add_argument("--seconds", type=float, help="the same in seconds, for a short run")
    parser.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of load before the idle figures (default 5; 0: none, idle is the proxy as started)",
    )
    parser.add_argument("--edit-gap", type=float, default=2.0, help="seconds between two edits (default 2)")
    parser.add_argument(
        "--idle", type=float, default=8.0, help="seconds without an edit after each round (default 8)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="no warm-up, no pause between edits, fds neither settled nor judged: seconds that check"
        " the harness and that edits under load fail nothing (the suite's smoke test)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_STABLE_S,
        help=f"seconds the fd count must stay the same to count as settled (default {SETTLE_STABLE_S:g})",
    )
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        print("the soak reads /proc: Linux only", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    options = Options(seconds, args.warmup, args.edit_gap, args.idle, args.settle)
    if args.quick:
        options = replace(options, warmup_s=0, edit_gap_s=0, idle_s=0, judge_fds=False)
    return 0 if run(options) else 1


if __name__ == "__main__":
    sys.exit(main())
