"""Choosing another target never changes failover (issue 14; cc-switch#6022: a manual switch
silently turned failover off), through a real ``trayproxy serve`` following its file.

The Target menu writes ``active`` to the file; here the test writes it, as the tray does, and
the running serve takes the edit. A prefix route keeps failing over whatever is chosen, and the
chosen target's own fallbacks are back when it is chosen again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from background import BackgroundServer, wait_until
from llm_targets import TargetLog, fault_app, llm_app
from route_serve import RunningServe, StartServe

CLIENT_TIMEOUT_S = 15.0
# The file is re-read within a second of a save; a loaded machine gets a wide margin.
EDIT_TAKEN_TIMEOUT_S = 15.0


@dataclass
class Switching:
    serve: RunningServe
    faults: TargetLog
    good: TargetLog
    urls: dict[str, str]

    def choose(self, name: str) -> None:
        """Write ``active = name`` and wait until the serve says it took it. (Not by polling
        with requests: those would fail on ``primary`` until the edit is read, and three
        failures in a row would cool it down, which is not what this test is about.)"""
        said = f"target is now {name}"
        before = len(self.serve.process.lines_with(said))
        self.serve.config.write_text(config_text(self.urls, active=name).replace("{port}", str(self.serve.port)))
        assert wait_until(
            lambda: len(self.serve.process.lines_with(said)) > before, timeout_s=EDIT_TAKEN_TIMEOUT_S
        ), self.serve.process.stderr


def config_text(urls: dict[str, str], *, active: str) -> str:
    return f"""\
active = "{active}"
[listen]
hosts = ["127.0.0.1"]
port = {{port}}

[targets.primary]
url = "{urls["faults"]}/primary/503"
fallbacks = ["good"]

[targets.other]
url = "{urls["other"]}"

[targets.good]
url = "{urls["good"]}"

[targets.routed]
url = "{urls["faults"]}/routed/503"
prefix = "/routed"
fallbacks = ["good"]
"""


@pytest.fixture(scope="module")
def switching(start_serve: StartServe) -> Iterator[Switching]:
    faults, good = TargetLog("faults"), TargetLog("good")
    with ExitStack() as stack:
        urls = {
            "faults": stack.enter_context(BackgroundServer(fault_app(faults))).url,
            "good": stack.enter_context(BackgroundServer(llm_app("good", good))).url,
            "other": stack.enter_context(BackgroundServer(llm_app("other"))).url,
        }
        serve = start_serve(config_text(urls, active="primary"), {})
        yield Switching(serve, faults, good, urls)


def answer_text(switching: Switching, path: str, case: str) -> str:
    """What answered a chat request on ``path``, marked ``X-Test-Case: case``."""
    with httpx.Client(trust_env=False, timeout=CLIENT_TIMEOUT_S) as http:
        response = http.post(
            f"{switching.serve.url}{path}",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": case}]},
            headers={"X-Test-Case": case},
        )
    if response.status_code != 200:
        return f"status {response.status_code}"
    return str(response.json()["choices"][0]["message"]["content"])


def test_choosing_another_target_and_back_keeps_every_failover(switching: Switching) -> None:
    """Chosen ``primary`` (503, fallback ``good``): its requests fail over. Choose ``other``: the
    ``/routed`` prefix still fails over to ``good``. Choose ``primary`` again: its requests fail
    over again, as before the switch."""
    assert answer_text(switching, "/v1/chat/completions", "before") == "hello from good"
    assert [r.raw_path for r in switching.faults.tagged("before")] == ["/primary/503/v1/chat/completions"]

    switching.choose("other")
    assert answer_text(switching, "/v1/chat/completions", "other") == "hello from other"
    assert answer_text(switching, "/routed/v1/chat/completions", "switched") == "hello from good"
    assert [r.raw_path for r in switching.faults.tagged("switched")] == ["/routed/503/v1/chat/completions"]

    switching.choose("primary")
    assert answer_text(switching, "/v1/chat/completions", "back") == "hello from good"
    assert [r.raw_path for r in switching.faults.tagged("back")] == ["/primary/503/v1/chat/completions"]
    assert len(switching.good.tagged("back")) == 1
