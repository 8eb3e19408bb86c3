"""The inspector's exports of what went through a real TrayProxy: a HAR file that validates
against the published HAR 1.2 schema (har-schema 2.0.0, vendored in har-schema/, checked by
check-jsonschema as a person would run it), and JSON Lines with the fields issue 15 names;
the answers in them are what the SDKs assembled, and no key is in either."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import httpx
import openai
import pytest
from llm_answers import CHAT_STREAM, MESSAGES_STREAM
from scripted_llm import CLIENT_KEY, CONFIGURED_KEY, Inspected, Reply, inspected

from desktop.inspector.har import har_bytes
from desktop.inspector.jsonl import jsonl_bytes

__all__ = ["inspected"]

SCHEMA_DIR = Path(__file__).parent / "har-schema"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
HI = [{"role": "user", "content": "Weather in Paris?"}]
JSONL_FIELDS = {
    "method", "path", "target", "status", "ttfb_ms", "ttft_ms", "model", "input_tokens",
    "output_tokens", "text", "tool_calls", "time", "route", "attempts", "outcome", "duration_ms",
}  # fmt: skip


class Exported:
    """The SDKs' own answers for the exchanges a varied session made, oldest first."""

    def __init__(self, chat: openai.types.chat.ChatCompletion, message: anthropic.types.Message) -> None:
        self.chat = chat
        self.message = message


@pytest.fixture
async def session(inspected: Inspected) -> AsyncIterator[Exported]:
    """A streamed chat completion (openai SDK), a streamed message (anthropic SDK), a gzip
    answer, a body that is not UTF-8, a target's 401 quoting both keys, a refusal."""
    inspected.replies["/v1/chat/completions"] = CHAT_STREAM
    inspected.replies["/v1/messages"] = MESSAGES_STREAM
    inspected.replies["/v1/zipped"] = Reply(
        [gzip.compress(b'{"ok": true}')], "application/json", headers={"Content-Encoding": "gzip"}
    )
    inspected.replies["/v1/bytes"] = Reply([bytes(range(256))], "application/octet-stream")
    inspected.replies["/v1/refused"] = Reply(
        [json.dumps({"error": {"message": f"bad key {CONFIGURED_KEY} / {CLIENT_KEY}"}}).encode()],
        "application/json",
        status=401,
    )
    async with httpx.AsyncClient(trust_env=False) as http:
        client = openai.AsyncOpenAI(
            base_url=inspected.url + "/v1", api_key=CLIENT_KEY, http_client=http, max_retries=0
        )
        # The stream helper left beta in openai 1.x's later releases; 1.45 (the floor) has it there.
        stream_helper = (
            getattr(client.chat.completions, "stream", None) or client.beta.chat.completions.stream
        )
        async with stream_helper(model="gpt-asked", messages=HI) as stream:  # type: ignore[arg-type]
            chat = await stream.get_final_completion()
    async with anthropic.DefaultAsyncHttpxClient(trust_env=False) as http:
        claude = anthropic.AsyncAnthropic(
            base_url=inspected.url, api_key=CLIENT_KEY, http_client=http, max_retries=0
        )
        async with claude.messages.stream(model="claude-asked", max_tokens=100, messages=HI) as stream:  # type: ignore[arg-type]
            message = await stream.get_final_message()
    async with aiohttp.ClientSession() as web:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        for path in ("/v1/zipped", "/v1/bytes", f"/v1/refused?key={CLIENT_KEY}"):
            async with web.get(inspected.url + path, headers=headers) as answer:
                await answer.read()
        async with web.get(
            inspected.url + "/v1/models", headers={"Origin": "https://evil.example"}
        ) as answer:
            assert answer.status == 403
    await inspected.settled(6)
    return Exported(chat, message)


async def check_har(path: Path) -> tuple[int, str]:
    """check-jsonschema's exit code and output for the HAR at ``path``."""
    checker = await asyncio.create_subprocess_exec(
        str(CHECK_JSONSCHEMA),
        "--schemafile",
        "har.json",
        str(path),
        cwd=SCHEMA_DIR,  # the schemas refer to each other by relative names
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await checker.communicate()
    return checker.returncode or 0, out.decode()


async def test_the_har_export_validates_against_the_har_schema_and_holds_no_key(
    inspected: Inspected, session: Exported, tmp_path: Path
) -> None:
    exchanges = list(reversed(inspected.store.exchanges()))
    data = har_bytes(exchanges)
    for key in (CONFIGURED_KEY, CLIENT_KEY):
        assert key.encode() not in data
    har = json.loads(data)
    path = tmp_path / "all.har"
    path.write_bytes(data)
    assert await check_har(path) == (0, "ok -- validation done\n")
    entries = har["log"]["entries"]
    assert [entry["request"]["url"].split("?")[0].rsplit("/", 1)[1] for entry in entries] == [
        "completions",
        "messages",
        "zipped",
        "bytes",
        "refused",
        "models",
    ]
    chat, message, zipped, raw, refused, models = entries
    assert chat["_answer"]["text"] == session.chat.choices[0].message.content
    assert message["_answer"]["text"] == "".join(b.text for b in session.message.content if b.type == "text")
    assert json.loads(message["_answer"]["tool_calls"][0]["arguments"]) == {"city": "Paris"}
    assert chat["_trayproxy"]["output_tokens"] == 12
    assert chat["timings"]["wait"] == chat["_trayproxy"]["ttfb_ms"] < chat["_trayproxy"]["ttft_ms"]
    assert chat["time"] == pytest.approx(chat["timings"]["wait"] + chat["timings"]["receive"], abs=0.2)
    assert json.loads(chat["request"]["postData"]["text"])["messages"] == HI
    assert zipped["response"]["content"]["text"] == '{"ok": true}'  # as browsers export it: decoded
    assert raw["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(raw["response"]["content"]["text"]) == bytes(range(256))
    assert refused["request"]["queryString"] == [{"name": "key", "value": "***"}]
    assert refused["response"]["status"] == 401
    assert models["_trayproxy"]["refused"] is True
    assert all(entry["_attempts"] == [] for entry in entries)  # one target, no routes


async def test_the_schema_check_refuses_a_har_missing_a_required_field(
    inspected: Inspected, session: Exported, tmp_path: Path
) -> None:
    """The check is not vacuous: the same export without an entry's time fails it."""
    har = json.loads(har_bytes(reversed(inspected.store.exchanges())))
    del har["log"]["entries"][0]["time"]
    path = tmp_path / "broken.har"
    path.write_text(json.dumps(har))
    code, out = await check_har(path)
    assert code != 0
    assert "'time' is a required property" in out


async def test_jsonl_lines_carry_the_required_fields_and_the_answers(
    inspected: Inspected, session: Exported
) -> None:
    data = jsonl_bytes(reversed(inspected.store.exchanges()))
    for key in (CONFIGURED_KEY, CLIENT_KEY):
        assert key.encode() not in data
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert set(line) >= JSONL_FIELDS
    chat, message = lines[0], lines[1]
    assert (chat["text"], chat["model"], chat["input_tokens"], chat["output_tokens"]) == (
        session.chat.choices[0].message.content,
        "gpt-scripted",
        31,
        12,
    )
    tool = session.chat.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert chat["tool_calls"] == [
        {"id": tool.id, "name": tool.function.name, "arguments": tool.function.arguments}
    ]
    assert json.loads(chat["tool_calls"][0]["arguments"]) == {"city": "Paris", "days": 2}
    assert (message["text"], message["output_tokens"]) == (
        "Checking Paris… é",
        session.message.usage.output_tokens,
    )
    assert lines[4]["status"] == 401
    assert lines[4]["path"] == "/v1/refused?key=***"
    assert (lines[5]["outcome"], lines[5]["text"], lines[5]["tool_calls"]) == ("origin_not_allowed", "", [])
