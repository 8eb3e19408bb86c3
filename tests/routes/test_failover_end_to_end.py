"""Failover through a real ``trayproxy serve``: the fault matrix of issue 14.

Each fault is a target of its own (``/{case}`` on the main port) whose URL scripts what the fault
target answers (``llm_targets.fault_app``), with the healthy ``good`` target as its fallback:
every fault before the first byte ends in a 200 from ``good``; a 429 whose ``Retry-After`` is
short is waited out on the same target; a stream cut after 40 of 60 events reaches the tool as a
broken stream and ``good`` is never asked; when every target fails the tool gets the last answer
as it was; a body that was streamed is never sent twice; a target without fallbacks is asked
once. The access line names the route and each attempt. Each case's target fails once only, so
no cool-down changes the order between cases.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from background import BackgroundServer, wait_until
from llm_targets import CUT_AFTER_EVENTS, TargetLog, fault_app, llm_app
from route_serve import ACCESS_LINE_TIMEOUT_S, RunningServe, StartServe
from sdk_clients import PLACEHOLDER, anthropic_sdk
from upstreams import dead_port
from wsclients import ws_client

GOOD_KEY = "sk-failover-good-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-failover-anthropic-0123456789abcdef"
OPENROUTER_KEY = "sk-or-failover-openrouter-0123456789abcdef"
KEYS = (GOOD_KEY, ANTHROPIC_KEY, OPENROUTER_KEY)
CLIENT_TIMEOUT_S = 20.0
# The stalling target's read_timeout: the proxy gives up on it after this long.
STALL_READ_TIMEOUT_S = 0.5
# A 429's Retry-After the proxy waits out (at most 2 s by default), and one it does not.
SHORT_RETRY_AFTER_S = 1
LONG_RETRY_AFTER_S = 30
# The bound that tells "went on to the fallback at once" from "waited Retry-After": far above
# a loaded machine's few seconds, far below 30 s.
AT_ONCE_S = 10.0
# A tool that gives up after GIVE_UP_S, on a target that asks for a 2 s wait (the most the
# proxy waits by default) or would time out after 1.5 s: both after the tool has gone.
GIVE_UP_S = 0.5
LEAVE_RETRY_AFTER_S = 2
LEAVE_READ_TIMEOUT_S = 1.5
# The most a proxy holds for replay (1 MiB), and one byte more.
HELD_BODY_BYTES = 1024 * 1024
BIG_BODY_BYTES = HELD_BODY_BYTES + 1

# case -> (fault steps, extra lines for its [targets.case] table)
CASES: dict[str, tuple[str, str]] = {
    "short429": (f"429-ra{SHORT_RETRY_AFTER_S}.ok", 'fallbacks = ["good"]\n'),
    "long429": (f"429-ra{LONG_RETRY_AFTER_S}", 'fallbacks = ["good"]\n'),
    "unavailable": ("503", 'fallbacks = ["good"]\n'),
    "reset": ("reset", 'fallbacks = ["good"]\n'),
    "stall": ("stall", f'fallbacks = ["good"]\nread_timeout = {STALL_READ_TIMEOUT_S}\n'),
    "sseerror": ("sseerr", 'fallbacks = ["good"]\n'),
    "empty": ("empty", 'fallbacks = ["good"]\n'),
    "cut": ("cut40", 'fallbacks = ["good"]\n'),
    "allfail": ("503", 'fallbacks = ["busy"]\n'),
    "chunked": ("503", 'fallbacks = ["good"]\n'),
    "big": ("503", 'fallbacks = ["good"]\n'),
    "solo503": ("503", ""),
    "solo429": (f"429-ra{SHORT_RETRY_AFTER_S}.ok", ""),
    "headers": ("503", 'fallbacks = ["good"]\n'),
    "twice429": (f"429-ra{SHORT_RETRY_AFTER_S}.429-ra{SHORT_RETRY_AFTER_S}.ok", 'fallbacks = ["good"]\n'),
    "wsrefused": ("503", 'fallbacks = ["good"]\n'),
    "wsrefusedline": ("503", 'fallbacks = ["good"]\n'),
    "flaky": ("503", 'fallbacks = ["good"]\n'),
    "commenterror": ("pingerr", 'fallbacks = ["good"]\n'),
    "date429": ("429-date.ok", 'fallbacks = ["good"]\n'),
    "allreset": ("reset", 'fallbacks = ["deadend"]\n'),
    "held": ("503", 'fallbacks = ["good"]\n'),
    "leave429": (f"429-ra{LEAVE_RETRY_AFTER_S}.ok", 'fallbacks = ["good"]\n'),
    "leavestall": ("stall", f'fallbacks = ["good"]\nread_timeout = {LEAVE_READ_TIMEOUT_S}\n'),
}


@dataclass
class Failover:
    """The running serve, what the fault target received (every case and ``busy``), and what
    the healthy targets did."""

    serve: RunningServe
    faults: TargetLog
    good: TargetLog
    openrouter: TargetLog


def config_text(faults_url: str, good_url: str, openrouter_url: str) -> str:
    cases = "".join(
        f'\n[targets.{case}]\nurl = "{faults_url}/{case}/{steps}"\nprefix = "/{case}"\n{extra}'
        for case, (steps, extra) in CASES.items()
    )
    return f"""\
active = "good"
[listen]
hosts = ["127.0.0.1"]
port = {{port}}

[targets.good]
url = "{good_url}"
key = {{ env = "TP_FAILOVER_GOOD_KEY" }}
headers = {{ Authorization = "Bearer {{key}}" }}

[targets.deadend]
url = "http://127.0.0.1:{dead_port()}"

[targets.busy]
url = "{faults_url}/busy/429-ra{LONG_RETRY_AFTER_S}"

[targets.anthropic]
url = "{faults_url}/anthropic/529"
key = {{ env = "TP_FAILOVER_ANTHROPIC_KEY" }}
headers = {{ x-api-key = "{{key}}" }}
models = ["claude-*"]
fallbacks = ["openrouter"]

[targets.openrouter]
url = "{openrouter_url}/api"
key = {{ env = "TP_FAILOVER_OPENROUTER_KEY" }}
headers = {{ Authorization = "Bearer {{key}}" }}
model_map = {{ "claude-sonnet-4-5" = "anthropic/claude-sonnet-4.5" }}
{cases}"""


@pytest.fixture(scope="module")
def failover(start_serve: StartServe) -> Iterator[Failover]:
    faults, good, openrouter = TargetLog("faults"), TargetLog("good"), TargetLog("openrouter")
    with ExitStack() as stack:
        faults_url = stack.enter_context(BackgroundServer(fault_app(faults))).url
        good_url = stack.enter_context(BackgroundServer(llm_app("good", good))).url
        openrouter_url = stack.enter_context(BackgroundServer(llm_app("openrouter", openrouter))).url
        serve = start_serve(
            config_text(faults_url, good_url, openrouter_url),
            {
                "TP_FAILOVER_GOOD_KEY": GOOD_KEY,
                "TP_FAILOVER_ANTHROPIC_KEY": ANTHROPIC_KEY,
                "TP_FAILOVER_OPENROUTER_KEY": OPENROUTER_KEY,
            },
        )
        yield Failover(serve, faults, good, openrouter)
        log = serve.process.stop()
        for key in KEYS:
            assert key not in log


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=CLIENT_TIMEOUT_S)


def chat(failover: Failover, case: str, *, stream: bool = False) -> httpx.Response:
    """An OpenAI chat request on ``case``'s prefix, marked with ``X-Test-Case: case``."""
    with client() as http:
        return http.post(
            f"{failover.serve.url}/{case}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": case}], "stream": stream},
            headers={"X-Test-Case": case},
        )


def attempts(failover: Failover, case: str) -> str:
    """What the access line of ``case``'s request says after its route: ``-> a 503, b 200 ...``."""
    line = failover.serve.access_line(f'"POST /{case}/v1/chat/completions" via prefix:/{case} ')
    return line.partition(f"via prefix:/{case} ")[2]


@pytest.mark.parametrize(
    ("case", "first_attempt"),
    [
        pytest.param("long429", "long429 429", id="429-retry-after-30"),
        pytest.param("unavailable", "unavailable 503", id="503"),
        pytest.param("reset", "reset connection_reset", id="reset-before-headers"),
        pytest.param("stall", "stall upstream_timeout", id="timeout-before-headers"),
        pytest.param("sseerror", "sseerror 200 (error event)", id="sse-error-event-first"),
        pytest.param("empty", "empty 200 (empty answer)", id="empty-200"),
    ],
)
def test_a_fault_before_the_first_byte_ends_in_a_200_from_the_fallback(
    failover: Failover, case: str, first_attempt: str
) -> None:
    """The tool gets the fallback's 200 (with the fallback's key added, the prefix stripped)
    instead of the fault: an error status, a dropped connection, a target that never answers,
    a 200 whose first event is an error or whose body is empty. A 429 asking for 30 s is not
    waited out: the fallback answers at once. The access line lists both attempts."""
    started = time.monotonic()
    response = chat(failover, case, stream=case == "sseerror")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from good"
    assert [r.step for r in failover.faults.tagged(case)] == [CASES[case][0]]
    [at_good] = failover.good.tagged(case)
    assert at_good.raw_path == "/v1/chat/completions"
    assert at_good.header("Authorization") == [f"Bearer {GOOD_KEY}"]
    assert re.match(rf"-> {re.escape(first_attempt)}, good 200 \d+ ", attempts(failover, case))
    if case == "long429":
        assert elapsed < AT_ONCE_S


@pytest.mark.parametrize(("case", "first_step"), [("short429", "429-ra1"), ("date429", "429-date")])
def test_a_429_with_a_short_retry_after_is_asked_again_after_that_wait(
    failover: Failover, case: str, first_step: str
) -> None:
    """``429 Retry-After: 1`` (in seconds, or as a date a second ahead): the same target is asked
    once more after that wait and its 200 reaches the tool; the fallback is not asked."""
    response = chat(failover, case)
    assert response.status_code == 200
    assert response.json() == {"served_by": "faults", "case": case}
    first, second = failover.faults.tagged(case)
    assert (first.step, second.step) == (first_step, "ok")
    if case == "short429":  # a date has whole seconds: its wait is only what is left of one
        assert second.at - first.at >= SHORT_RETRY_AFTER_S - 0.1
    assert failover.good.tagged(case) == []
    assert re.match(rf"-> {case} 429, {case} 200 \d+ ", attempts(failover, case))


def test_a_529_on_a_model_route_fails_over_with_the_fallbacks_own_key_and_model_name(
    failover: Failover,
) -> None:
    """Anthropic overloaded (529) on ``claude-*``: the anthropic SDK gets OpenRouter's message
    (its model name as OpenRouter sent it), OpenRouter having had its own key (never
    Anthropic's, nor the tool's placeholder) and its own name for the model; the access line
    reads as in issue 14."""
    with anthropic_sdk(failover.serve.url, timeout_s=CLIENT_TIMEOUT_S) as claude:
        message = claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Test-Case": "overloaded"},
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from openrouter"
    assert message.model == "anthropic/claude-sonnet-4.5"
    [at_anthropic] = failover.faults.tagged("overloaded")
    assert at_anthropic.raw_path == "/anthropic/529/v1/messages"
    assert at_anthropic.header("x-api-key") == [ANTHROPIC_KEY]
    [at_openrouter] = failover.openrouter.tagged("overloaded")
    assert at_openrouter.raw_path == "/api/v1/messages"
    assert at_openrouter.header("Authorization") == [f"Bearer {OPENROUTER_KEY}"]
    assert at_openrouter.header("x-api-key") == []
    values = " ".join(value for _, value in at_openrouter.headers)
    assert ANTHROPIC_KEY not in values
    assert PLACEHOLDER not in values
    assert at_openrouter.json()["model"] == "anthropic/claude-sonnet-4.5"
    assert at_openrouter.header("Content-Length") == [str(len(at_openrouter.body))]
    line = failover.serve.access_line('"POST /v1/messages"')
    assert '"POST /v1/messages" via model:claude-* -> anthropic 529, openrouter 200 ' in line


def read_events(http: httpx.Client, url: str, case: str, events: list[str]) -> None:
    """Ask ``url`` for a stream and put each ``data:`` line in ``events`` as it arrives (kept
    when reading the rest fails)."""
    with http.stream(
        "POST",
        url,
        json={"model": "gpt-4o-mini", "messages": [], "stream": True},
        headers={"X-Test-Case": case},
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(line)


def test_a_stream_cut_after_its_first_events_reaches_the_tool_broken_and_is_not_retried(
    failover: Failover,
) -> None:
    """40 of 60 events, then the target's connection drops: the tool has the 40 and then an
    error reading the stream (never a clean end it would take for a whole answer), and the
    fallback is not asked, since the tool already has part of an answer."""
    events: list[str] = []
    with client() as http, pytest.raises(httpx.TransportError):
        read_events(http, f"{failover.serve.url}/cut/v1/chat/completions", "cut", events)
    assert len(events) == CUT_AFTER_EVENTS
    assert len(failover.faults.tagged("cut")) == 1
    assert failover.good.tagged("cut") == []
    # One attempt, and the line says the answer broke (the bracketed ending of a failed stream).
    assert re.fullmatch(r"-> cut 200 \d+ ttfb=\S+ \S+ \[upstream_error\]", attempts(failover, "cut"))


def test_when_every_target_fails_the_tool_gets_the_last_answer_unchanged(failover: Failover) -> None:
    """503, then the fallback's 429 with ``Retry-After: 30``: the tool gets that 429, its
    Retry-After and its body as the fallback sent them, and can wait as it asks."""
    response = chat(failover, "allfail")
    assert response.status_code == 429
    assert response.headers.get_list("Retry-After") == [str(LONG_RETRY_AFTER_S)]
    assert response.json() == {"type": "error", "error": {"type": "status_429", "message": "scripted"}}
    asked = failover.faults.tagged("allfail")
    assert [(r.raw_path.split("/")[1], r.step) for r in asked] == [("allfail", "503"), ("busy", "429-ra30")]
    assert re.match(r"-> allfail 503, busy 429 \d+ ", attempts(failover, "allfail"))


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 7):
        yield body[start : start + 7]


@pytest.mark.parametrize("case", ["chunked", "big"])
def test_a_streamed_request_body_is_never_sent_twice(failover: Failover, case: str) -> None:
    """A body sent without Content-Length (chunked) or over 1 MiB is not held, so it cannot be
    replayed: the target's 503 reaches the tool and the fallback is not asked."""
    if case == "chunked":
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "chunked"}]}'
        content: bytes | Iterator[bytes] = _chunks(body)
    else:
        body = b'{"model": "gpt-4o-mini", "pad": "' + b"x" * BIG_BODY_BYTES + b'"}'
        content = body
    with client() as http:
        response = http.post(
            f"{failover.serve.url}/{case}/v1/chat/completions",
            content=content,
            headers={"Content-Type": "application/json", "X-Test-Case": case},
        )
    assert response.status_code == 503
    [asked] = failover.faults.tagged(case)
    assert asked.body == body
    assert failover.good.tagged(case) == []
    assert re.match(rf"-> {case} 503 \d+ ", attempts(failover, case))


@pytest.mark.parametrize(("case", "status"), [("solo503", 503), ("solo429", 429)])
def test_a_target_without_fallbacks_is_asked_once(failover: Failover, case: str, status: int) -> None:
    """No fallbacks, no failover: a 503 or a 429 (even one asking for a second's wait) reaches
    the tool at once, from the one attempt."""
    response = chat(failover, case)
    assert response.status_code == status
    assert len(failover.faults.tagged(case)) == 1
    if status == 429:
        assert response.headers.get_list("Retry-After") == [str(SHORT_RETRY_AFTER_S)]
    assert re.match(rf"-> {case} {status} \d+ ", attempts(failover, case))


def test_failover_adds_no_response_header(failover: Failover) -> None:
    """The answer a fallback gives after a failure carries exactly the header names of the same
    target's answer asked directly: no header tells the tool (or breaks it) that failover ran."""
    after_failover = chat(failover, "headers")
    with client() as http:
        direct = http.post(
            f"{failover.serve.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "headers"}], "stream": False},
            headers={"X-Test-Case": "direct"},
        )
    assert after_failover.status_code == direct.status_code == 200
    assert [r.step for r in failover.faults.tagged("headers")] == ["503"]
    assert len(failover.good.tagged("headers")) == len(failover.good.tagged("direct")) == 1
    names = [sorted(name for name, _ in response.headers.multi_items()) for response in (after_failover, direct)]
    assert names[0] == names[1]


def test_a_429_again_after_its_wait_goes_on_to_the_fallback(failover: Failover) -> None:
    """The same target is asked once more after a short Retry-After, not again and again: a
    second 429 sends the request on to the fallback."""
    response = chat(failover, "twice429")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello from good"
    assert [r.step for r in failover.faults.tagged("twice429")] == ["429-ra1", "429-ra1"]
    assert len(failover.good.tagged("twice429")) == 1
    assert re.match(r"-> twice429 429, twice429 429, good 200 \d+ ", attempts(failover, "twice429"))


async def talk_over_refused_websocket(failover: Failover, case: str) -> tuple[dict[str, object], str]:
    """Open a Realtime WebSocket on ``case``'s prefix, send "ping": (the hello, the echo)."""
    async with ws_client(
        f"ws://127.0.0.1:{failover.serve.port}/{case}/v1/realtime?model=gpt-realtime",
        additional_headers={"X-Test-Case": case},
    ) as ws:
        hello = json.loads(await ws.recv())
        await ws.send("ping")
        return hello, str(await ws.recv())


async def test_a_websocket_upgrade_refused_before_101_is_relayed_by_the_fallback(failover: Failover) -> None:
    """The target answers the upgrade with 503: the tool's WebSocket opens on the fallback,
    with the fallback's key, and messages go both ways."""
    hello, echoed = await talk_over_refused_websocket(failover, "wsrefused")
    assert hello == {
        "target": "good",
        "path": "/v1/realtime?model=gpt-realtime",
        "authorization": [f"Bearer {GOOD_KEY}"],
    }
    assert echoed == "ping"
    assert [r.step for r in failover.faults.tagged("wsrefused")] == ["503"]


async def test_the_access_line_of_a_websocket_that_failed_over_names_both_attempts(failover: Failover) -> None:
    """The line of a WebSocket refused by its target and taken by the fallback lists both."""
    hello, _ = await talk_over_refused_websocket(failover, "wsrefusedline")
    assert hello["target"] == "good"
    line = failover.serve.access_line('"GET /wsrefusedline/v1/realtime?model=gpt-realtime"')
    assert "via prefix:/wsrefusedline -> wsrefusedline 503, good 101 " in line


def test_a_target_that_keeps_failing_is_tried_last_for_its_cool_down(failover: Failover) -> None:
    """Three failures in a row put the target in its cool-down: the fourth request goes to the
    fallback first, so it no longer waits on a target known to be down."""
    for _ in range(4):
        assert chat(failover, "flaky").status_code == 200
    assert len(failover.faults.tagged("flaky")) == 3
    assert len(failover.good.tagged("flaky")) == 4
    needle = '"POST /flaky/v1/chat/completions" via prefix:/flaky '
    assert wait_until(lambda: len(failover.serve.process.lines_with(needle)) == 4, timeout_s=ACCESS_LINE_TIMEOUT_S)
    tried = [re.search(r"via prefix:/flaky ((?:\(flaky tried last\) )?-> .*?) \d+ ttfb=", line) for line in failover.serve.process.lines_with(needle)]
    assert [found.group(1) if found else None for found in tried] == [
        "-> flaky 503, good 200",
        "-> flaky 503, good 200",
        "-> flaky 503, good 200",
        "(flaky tried last) -> good 200",
    ]
    assert failover.serve.process.lines_with("target flaky failed 3 times in a row; it is tried last for 30 s")



def test_when_no_target_answers_the_tool_gets_the_last_proxy_error(failover: Failover) -> None:
    """The first target resets the connection, the fallback refuses it: the tool gets
    TrayProxy's own 502 naming the last target and why, and the line lists both attempts."""
    response = chat(failover, "allreset")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "connection_refused"
    assert "deadend" in response.json()["error"]["message"]
    assert [r.step for r in failover.faults.tagged("allreset")] == ["reset"]
    assert re.match(
        r"-> allreset connection_reset, deadend connection_refused = 502 \d+ ", attempts(failover, "allreset")
    )


def test_an_error_event_after_a_comment_still_fails_over(failover: Failover) -> None:
    """A gateway that sends an SSE comment while it waits, then ``event: error``, has not
    answered yet: the fallback's 200 reaches the tool."""
    response = chat(failover, "commenterror", stream=True)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello from good"



def test_a_tool_that_gives_up_is_not_retried_for(failover: Failover) -> None:
    """The tool stops waiting (its own timeout) while the proxy waits out a 429's Retry-After or
    a target's silence: nobody is left to answer, so neither the same target nor the fallback
    is asked again (each retry would spend the user's quota), and the line says the tool left."""
    started = time.monotonic()
    with client() as http:
        for case in ("leave429", "leavestall"):
            with pytest.raises(httpx.TimeoutException):
                http.post(
                    f"{failover.serve.url}/{case}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": []},
                    headers={"X-Test-Case": case},
                    timeout=GIVE_UP_S,
                )
    for case in ("leave429", "leavestall"):
        assert attempts(failover, case).endswith("[client went away]")
    # Past the moment a retry or the fallback would have been asked.
    time.sleep(max(0.0, started + LEAVE_RETRY_AFTER_S + 0.5 - time.monotonic()))
    assert [r.step for r in failover.faults.tagged("leave429")] == ["429-ra2"]
    assert [r.step for r in failover.faults.tagged("leavestall")] == ["stall"]
    assert failover.good.tagged("leave429") == failover.good.tagged("leavestall") == []


def test_a_held_body_of_1_mib_is_replayed_whole_to_the_fallback(failover: Failover) -> None:
    """A body of exactly 1 MiB with its Content-Length is held, so after the target's 503 the
    fallback gets it again, byte for byte, and answers."""
    prefix = b'{"model": "gpt-4o-mini", "pad": "'
    body = prefix + b"y" * (HELD_BODY_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == HELD_BODY_BYTES
    with client() as http:
        response = http.post(
            f"{failover.serve.url}/held/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "X-Test-Case": "held"},
        )
    assert response.status_code == 200
    [at_target] = failover.faults.tagged("held")
    [at_good] = failover.good.tagged("held")
    assert at_target.body == at_good.body == body
    assert at_good.header("Content-Length") == [str(HELD_BODY_BYTES)]
