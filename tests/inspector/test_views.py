"""What the page shows of an exchange that went through a real TrayProxy (row_json, detail_json):
the contract's fields, no body text in a row, and no key anywhere: neither the configured one
the proxy added nor the one the client sent, not even where a target's error quotes them.
The copied cURL, run in a POSIX shell, sends the same request through TrayProxy again."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from llm_answers import CHAT_STREAM
from scripted_llm import CLIENT_KEY, CONFIGURED_KEY, Inspected, Reply, inspected

from desktop.inspector.views import detail_json, row_json

__all__ = ["inspected"]

HI = [{"role": "user", "content": "Weather in Paris?"}]
KEYS = (CONFIGURED_KEY, CLIENT_KEY)
ROW_FIELDS = {
    "id", "time", "method", "path", "port", "kind", "state", "status", "route", "target", "attempts",
    "ttfb_ms", "ttft_ms", "duration_ms", "bytes_up", "bytes_down", "model", "input_tokens",
    "output_tokens", "cached_tokens", "tokens_per_s", "outcome", "error", "refused", "body_state",
    "websocket", "cache", "cache_note",
}  # fmt: skip
DETAIL_FIELDS = ROW_FIELDS | {
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "answer",
    "chunk_gaps_ms",
    "curl",
}


@pytest.fixture
async def openai_sdk(inspected: Inspected) -> AsyncIterator[openai.AsyncOpenAI]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield openai.AsyncOpenAI(
            base_url=inspected.url + "/v1", api_key=CLIENT_KEY, http_client=http, max_retries=0
        )


def assert_no_key(shown: Any) -> None:
    text = json.dumps(shown, ensure_ascii=False)
    for key in KEYS:
        assert key not in text


async def test_a_streamed_answer_shows_its_row_and_detail_without_any_key(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.replies["/v1/chat/completions"] = CHAT_STREAM
    completion = await openai_sdk.chat.completions.create(model="gpt-asked", messages=HI, stream=True)  # type: ignore[arg-type]
    [chunk async for chunk in completion]
    exchange = await inspected.settled()
    # The target got both: the proxy's key in its place, nothing of the client's.
    assert inspected.received[-1].headers["Authorization"] == f"Bearer {CONFIGURED_KEY}"
    row, detail = row_json(exchange), detail_json(exchange)
    assert set(row) == ROW_FIELDS
    assert set(detail) == DETAIL_FIELDS
    assert_no_key([row, detail])
    assert "Paris" not in json.dumps(row)  # a row carries no body text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["time"])
    assert (row["method"], row["path"], row["kind"], row["state"], row["status"]) == (
        "POST",
        "/v1/chat/completions",
        "http",
        "done",
        200,
    )
    assert (row["target"], row["model"], row["input_tokens"], row["output_tokens"]) == (
        "scripted",
        "gpt-scripted",
        31,
        12,
    )
    assert 0 <= row["ttfb_ms"] < row["ttft_ms"] <= row["duration_ms"]
    assert row["bytes_down"] == exchange.response_bytes > 0
    assert (row["body_state"], row["refused"], row["outcome"], row["websocket"]) == ("kept", False, "", None)
    sent = dict((name.lower(), value) for name, value in detail["request_headers"])
    assert sent["authorization"] == "Bearer ***"
    assert detail["request_body"]["json"]["messages"] == HI
    answer = detail["answer"]
    assert (answer["api"], answer["streamed"], answer["text"]) == ("openai-chat", True, "Checking Paris… é")
    assert json.loads(answer["tool_calls"][0]["arguments"]) == {"city": "Paris", "days": 2}
    assert detail["response_body"]["text"].endswith("data: [DONE]\n\n")
    assert len(detail["chunk_gaps_ms"]) == len(exchange.chunks) - 1
    assert max(detail["chunk_gaps_ms"]) >= 450  # the scripted wait before the first token


async def test_a_targets_error_quoting_the_keys_shows_them_masked(inspected: Inspected) -> None:
    """OpenAI's 401 quotes the key it refused; a gateway may echo the client's. Neither shows,
    nor a key in the query, in a header of any name, or one the client put in its body."""
    quoted = f"Incorrect API key provided: {CONFIGURED_KEY}; the client sent {CLIENT_KEY}"
    inspected.replies["/v1/chat/completions"] = Reply(
        [json.dumps({"error": {"message": quoted, "type": "invalid_request_error"}}).encode()],
        content_type="application/json",
        status=401,
        headers={"X-Echo-Token": CONFIGURED_KEY},
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            inspected.url + f"/v1/chat/completions?key={CLIENT_KEY}&user=me",
            json={"model": "gpt-asked", "messages": HI, "note": CLIENT_KEY},
            headers={"x-api-key": CLIENT_KEY, "X-Custom-Auth": f"Token {CLIENT_KEY}"},
        ) as answer,
    ):
        assert answer.status == 401
        assert CONFIGURED_KEY in await answer.text()  # what the target said, passed on as is
    exchange = await inspected.settled()
    row, detail = row_json(exchange), detail_json(exchange)
    assert_no_key([row, detail])
    assert row["path"] == "/v1/chat/completions?key=***&user=me"
    assert row["status"] == 401
    assert "Incorrect API key provided: ***" in detail["response_body"]["text"]
    assert detail["answer"]["error"]["message"] == "Incorrect API key provided: ***; the client sent ***"
    assert dict(detail["response_headers"])["X-Echo-Token"] == "***"
    assert dict(detail["request_headers"])["X-Custom-Auth"] == "Token ***"
    assert detail["request_body"]["json"]["note"] == "***"


async def test_the_copied_curl_sends_the_same_request_through_trayproxy_again(inspected: Inspected) -> None:
    """Run in a POSIX shell, the command reaches the target through the proxy with the same
    method, path, headers and body bytes (a body that is no UTF-8 too), the target's key added
    by the proxy; the command itself holds no key."""
    inspected.replies["/v1/upload"] = Reply([b"{}"], content_type="application/json")
    body = bytes(range(256)) + b"it's 100% \\ 'quoted' $HOME `x`"
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            inspected.url + "/v1/upload?part=1",
            data=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Note": "a 'b' $c", "Content-Type": "x/y"},
        ) as answer,
    ):
        assert answer.status == 200
    first = await inspected.settled()
    command = detail_json(first)["curl"]
    assert_no_key(command)
    assert '"Authorization: Bearer $TRAYPROXY_KEY"' in command
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        env={"PATH": os.environ["PATH"], "TRAYPROXY_KEY": "placeholder-from-env"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await shell.communicate()
    assert shell.returncode == 0, err
    assert out == b"{}"
    again = await inspected.settled(2)
    assert again is not first
    sent, resent = inspected.received[-2], inspected.received[-1]
    assert (resent.method, resent.path_qs) == (sent.method, sent.path_qs) == ("PUT", "/v1/upload?part=1")
    assert again.request_body == first.request_body == body
    assert resent.headers["X-Note"] == "a 'b' $c"
    assert resent.headers["Content-Type"] == "x/y"
    assert resent.headers["Authorization"] == f"Bearer {CONFIGURED_KEY}"


async def test_a_refusal_by_the_guard_is_a_refused_row_with_no_target(inspected: Inspected) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            inspected.url + "/v1/chat/completions", json={}, headers={"Origin": "https://evil.example"}
        ) as answer,
    ):
        assert answer.status == 403
    exchange = await inspected.settled()
    row = row_json(exchange)
    assert (row["refused"], row["target"], row["status"], row["outcome"]) == (
        True,
        "",
        403,
        "origin_not_allowed",
    )
    detail = detail_json(exchange)
    assert detail["answer"] is None
    assert "origin_not_allowed" in (detail["response_body"]["text"] or "")


async def test_with_bodies_off_the_detail_says_so_and_keeps_its_facts(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.store.keep_bodies = False
    inspected.replies["/v1/chat/completions"] = CHAT_STREAM
    completion = await openai_sdk.chat.completions.create(model="gpt-asked", messages=HI, stream=True)  # type: ignore[arg-type]
    [chunk async for chunk in completion]
    exchange = await inspected.settled()
    detail = detail_json(exchange)
    assert (detail["body_state"], detail["request_body"]["state"], detail["response_body"]["state"]) == (
        "off",
        "off",
        "off",
    )
    assert (detail["request_body"]["text"], detail["response_body"]["text"], detail["answer"]) == (
        None,
        None,
        None,
    )
    assert (detail["model"], detail["output_tokens"]) == ("gpt-scripted", 12)
    assert "request body was not kept" in detail["curl"]
