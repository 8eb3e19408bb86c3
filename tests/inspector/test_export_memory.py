"""An export of everything the inspector holds is written out entry by entry, not built whole.

A person exporting a full body ring (64 MiB by default) must not see TrayProxy take several
times that: the real ``trayproxy serve`` (a subprocess following a config file) streams chat
answers of 1 MiB from a target until the ring is full, then the whole list is exported as HAR
and as JSONL, read as a browser would. Its peak RSS over the whole run stays under the ring +
64 MiB (built whole, a 42 MiB ring's HAR took ~245 MiB more), and the exports are whole: every
request listed, parseable, no key in them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port, status_kib, wait_until
from cli_process import ServeProcess
from listen_helpers import proxy_answers

from desktop.inspector.access import COOKIE_NAME, read_session_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

MIB = 1024 * 1024
BODY_CAP_MIB = 64
# Enough answers of 1 MiB to fill the ring and turn it over.
RESPONSES = BODY_CAP_MIB + 16
PEAK_GROWTH_LIMIT_MIB = BODY_CAP_MIB + 64
CLIENT_KEY = "sk-client-key-export-memory-7d3e91c2"


def _chat_app() -> web.Application:
    """A chat completions stream of 1 MiB: events of ~1 KiB of text each, different for each
    answer (``"n"`` in the request), so the export reads each one back for its text."""

    async def chat(request: web.Request) -> web.StreamResponse:
        number = (await request.json())["n"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        piece = 0
        while sent < MIB:
            words = f"answer {number} piece {piece} ".ljust(1000, "w")
            delta = {"choices": [{"index": 0, "delta": {"content": words}, "finish_reason": None}]}
            event = b"data: " + json.dumps(delta).encode() + b"\n\n"
            await response.write(event)
            sent += len(event)
            piece += 1
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def test_an_export_of_a_full_body_ring_is_written_without_holding_it_whole(tmp_path: Path) -> None:
    with BackgroundServer(_chat_app()) as upstream:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(
            f'active = "llm"\n\n[targets.llm]\nurl = "{upstream.url}"\n\n'
            f"[inspector]\nbody_cap_mib = {BODY_CAP_MIB}\n"
        )
        serve = ServeProcess(config, "--port", str(port), "--host", "127.0.0.1", "-q")
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: proxy_answers(port, timeout_s=1), timeout_s=15)
            runtime = Path(os.environ["XDG_RUNTIME_DIR"]) / "TrayProxy"
            assert wait_until(lambda: read_session_file(runtime) is not None, timeout_s=15)
            session = read_session_file(runtime)
            assert session is not None
            page = {"Cookie": f"{COOKIE_NAME}={session.secret}", "Sec-Fetch-Site": "same-origin"}
            pid = serve.proc.pid

            def ask(client: httpx.Client, number: int) -> None:
                body = {
                    "model": "gpt-test",
                    "stream": True,
                    "n": number,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
                with client.stream(
                    "POST", base + "/v1/chat/completions", json=body, headers=headers
                ) as answer:
                    assert answer.status_code == 200
                    assert sum(len(piece) for piece in answer.iter_raw()) > MIB

            def export(client: httpx.Client, name: str) -> Path:
                written = tmp_path / name
                with (
                    client.stream("GET", session.page_url + name, headers=page) as answer,
                    written.open("wb") as out,
                ):
                    assert answer.status_code == 200
                    for piece in answer.iter_raw():
                        out.write(piece)
                return written

            with httpx.Client(trust_env=False, timeout=60) as client:
                # One of each first: imports done, pools and threads made, as a used proxy's are.
                ask(client, -1)
                export(client, "export.har")
                export(client, "export.jsonl")
                idle_kib = status_kib(pid, "VmRSS")
                for number in range(RESPONSES):
                    ask(client, number)
                held_mib = (status_kib(pid, "VmRSS") - idle_kib) / 1024
                started = time.monotonic()
                har = export(client, "export.har")
                jsonl = export(client, "export.jsonl")
                took = time.monotonic() - started
            peak_mib = (status_kib(pid, "VmHWM") - idle_kib) / 1024
            print(
                f"ring filled: RSS +{held_mib:.1f} MiB; HAR {har.stat().st_size / MIB:.1f} MiB and JSONL "
                f"{jsonl.stat().st_size / MIB:.1f} MiB in {took:.1f} s; peak RSS +{peak_mib:.1f} MiB"
            )
        finally:
            serve.stop()
    assert held_mib >= BODY_CAP_MIB * 3 // 4, "the ring was not filled: is the inspector on?"
    assert peak_mib <= PEAK_GROWTH_LIMIT_MIB
    entries = json.loads(har.read_bytes())["log"]["entries"]
    assert len(entries) == RESPONSES + 1
    texts = [entry["_answer"]["text"] for entry in entries if entry["_answer"] and entry["_answer"]["text"]]
    assert len(texts) >= BODY_CAP_MIB * 3 // 4  # the answers the ring still held, read back
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [entry["_trayproxy"]["id"] for entry in entries]
    for written in (har, jsonl):
        assert CLIENT_KEY.encode() not in written.read_bytes()
