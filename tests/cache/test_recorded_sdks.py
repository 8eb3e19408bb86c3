"""Recorded answers as a developer meets them: the real openai and anthropic SDKs against the
real ``trayproxy serve`` (a subprocess, in the test's own home), in front of scripted targets on
127.0.0.1 that number every answer, so an answer from the recording is told from a fresh one by
its bytes.

- replay: a repeated request, whole or streamed, is answered from the recording with the same
  bytes in the same chunks (the SDK's raw pieces, and a plain HTTP client's chunks), and the
  target is sent it once;
- offline, the target stopped: what was recorded is answered as recorded; anything else is
  ``504 cache_offline_miss``, and the SDK's error carries the code;
- a changed body, model or ``Accept-Encoding`` is another request;
- ``Cache-Control: no-store`` is neither answered from the recording nor recorded;
- with a prefix route and fallbacks, a hit contacts neither the route's target nor a fallback,
  even while both fail.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from background import wait_until
from cli_process import run_cli
from numbered_target import NumberedTarget
from serve_started import Serves
from tapped_sdks import Tapped, TappedAnswer, anthropic_client, openai_client

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-5"
# The request headers that are part of what makes two requests the same.
KEY_HEADERS = ("accept", "accept-encoding", "anthropic-version", "anthropic-beta", "openai-beta")
NO_STORE = {"Cache-Control": "no-store"}
# A recording is written by serve's worker once the answer has ended; another process reads it.
WRITTEN_TIMEOUT_S = 10.0


@dataclass
class Running:
    """A numbered target served on 127.0.0.1."""

    target: NumberedTarget
    server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


StartTarget = Callable[[str], Awaitable[Running]]


@pytest.fixture
async def targets(aiohttp_server: Any) -> StartTarget:
    async def start(name: str) -> Running:
        target = NumberedTarget(name)
        return Running(target, await aiohttp_server(target.app(), host="127.0.0.1"))

    return start


@pytest.fixture
def serves() -> Iterator[Serves]:
    started = Serves()
    yield started
    started.stop_all()


def config_file(folder: Path, text: str) -> Path:
    path = folder / "config.toml"
    path.write_text(text)
    return path


def one_target(url: str, mode: str) -> str:
    return f'active = "main"\n\n[targets.main]\nurl = "{url}"\ncache = "{mode}"\n'


def said(prompt: str) -> Any:  # each SDK types its messages its own way
    return [{"role": "user", "content": prompt}]


async def chat(client: openai.AsyncOpenAI, prompt: str, *, stream: bool = False, **options: Any) -> Any:
    """What the SDK made of the answer: the completion, or the list of its streamed chunks."""
    options.setdefault("model", GPT)
    if stream:
        chunks: Any = await client.chat.completions.create(messages=said(prompt), stream=True, **options)
        return [chunk.model_dump() async for chunk in chunks]
    completion: Any = await client.chat.completions.create(messages=said(prompt), **options)
    return completion.model_dump()


async def message(
    client: anthropic.AsyncAnthropic, prompt: str, *, stream: bool = False, **options: Any
) -> Any:
    """What the SDK made of the answer: the message, or the list of its streamed events."""
    options.setdefault("model", CLAUDE)
    if stream:
        events: Any = await client.messages.create(
            max_tokens=64, messages=said(prompt), stream=True, **options
        )
        return [event.model_dump() async for event in events]
    answer: Any = await client.messages.create(max_tokens=64, messages=said(prompt), **options)
    return answer.model_dump()


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])


def key_headers(sent: TappedAnswer) -> dict[str, str]:
    """The headers of the SDK's request that a repeat must send alike."""
    return {name: value for name, value in sent.request_headers if name.lower() in KEY_HEADERS}


async def http_chunks(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, list[bytes]]:
    """POST ``body``: the status and the body as the HTTP chunks it came in, undecoded."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        chunks: list[bytes] = []
        current = b""
        async for data, end_of_chunk in response.content.iter_chunks():
            current += data
            if end_of_chunk and current:
                chunks.append(current)
                current = b""
        return response.status, [*chunks, current] if current else chunks


def recorded_prompts() -> list[str]:
    """The prompt of each answer recorded in this home, read by ``trayproxy cache export``."""
    exported = run_cli("cache", "export")
    assert exported.returncode == 0, exported.stderr
    return [
        json.loads(json.loads(line)["request"]["body"])["messages"][-1]["content"]
        for line in exported.stdout.splitlines()
    ]


async def test_repeats_through_the_openai_sdk_are_the_recorded_bytes_in_the_recorded_chunks(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    main = await targets("main")
    serving = serves.start(config_file(tmp_path, one_target(main.url, "replay")))
    async with openai_client(serving.url + "/v1") as (client, tapped):
        whole = await chat(client, "Weather in Paris?")
        whole_again = await chat(client, "Weather in Paris?")
        streamed = await chat(client, "Weather in Rome?", stream=True)
        streamed_again = await chat(client, "Weather in Rome?", stream=True)
    assert main.target.prompts() == ["Weather in Paris?", "Weather in Rome?"]  # the repeats never left
    assert whole["choices"][0]["message"]["content"] == 'answer 1 from main to "Weather in Paris?"'
    assert whole_again == whole
    assert streamed_text(streamed) == 'answer 2 from main to "Weather in Rome?"'
    assert streamed_again == streamed
    first, again, first_stream, again_stream = tapped.answers
    assert first.header("Content-Encoding") == "gzip"  # the target compressed it, as asked
    assert again.body == first.body  # the same compressed bytes
    assert again.header("x-request-id") == first.header("x-request-id") == "req_1"
    assert again_stream.pieces == first_stream.pieces  # the same chunks, in the same order
    assert first_stream.body == b"".join(main.target.written[1])
    assert again_stream.header("Content-Type") == "text/event-stream"
    assert serving.cache_outcomes(4) == ["miss", "hit", "miss", "hit"]

    # A plain HTTP client, reading the HTTP chunks themselves: the replay comes in the chunks the
    # first answer came in, one per event the target wrote.
    sent = first_stream
    body = sent.request_body.replace(b"Rome", b"Oslo")
    url = serving.url + "/v1/chat/completions"
    status, chunks = await http_chunks(url, body, key_headers(sent))
    assert status == 200
    assert b"".join(chunks) == b"".join(main.target.written[2])
    assert len(chunks) == len(main.target.written[2]) > 5
    assert await http_chunks(url, body, key_headers(sent)) == (200, chunks)
    assert len(main.target.received) == 3


async def test_repeats_through_the_anthropic_sdk_are_the_recorded_bytes_in_the_recorded_chunks(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    main = await targets("main")
    serving = serves.start(config_file(tmp_path, one_target(main.url, "replay")))
    async with anthropic_client(serving.url) as (client, tapped):
        whole = await message(client, "Weather in Paris?")
        whole_again = await message(client, "Weather in Paris?")
        streamed = await message(client, "Weather in Rome?", stream=True)
        streamed_again = await message(client, "Weather in Rome?", stream=True)
    assert main.target.prompts() == ["Weather in Paris?", "Weather in Rome?"]
    assert whole["content"][0]["text"] == 'answer 1 from main to "Weather in Paris?"'
    assert whole_again == whole
    assert [event["type"] for event in streamed][:2] == ["message_start", "content_block_start"]
    assert streamed_again == streamed
    first, again, first_stream, again_stream = tapped.answers
    assert again.body == first.body
    assert again_stream.pieces == first_stream.pieces
    assert first_stream.body == b"".join(main.target.written[1])
    assert serving.cache_outcomes(4) == ["miss", "hit", "miss", "hit"]

    # The SDK's own request, its JSON respelt (keys reordered, spaces added), sent by a plain
    # client with the same answer-changing headers: the same request, so the SDK's recording
    # answers it, in the chunks the target wrote.
    document = json.loads(first_stream.request_body)
    respelt = json.dumps(dict(reversed(document.items())), indent=2).encode()
    assert respelt != first_stream.request_body
    status, chunks = await http_chunks(serving.url + "/v1/messages", respelt, key_headers(first_stream))
    assert status == 200
    assert b"".join(chunks) == first_stream.body
    assert len(chunks) == len(main.target.written[1])
    assert len(main.target.received) == 2


async def test_offline_with_the_target_stopped_answers_what_was_recorded_and_refuses_the_rest(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    main = await targets("main")
    config = config_file(tmp_path, one_target(main.url, "record"))

    async def ask_all(url: str) -> tuple[list[Any], Tapped, Tapped]:
        async with (
            openai_client(url + "/v1") as (gpt, gpt_tap),
            anthropic_client(url) as (claude, claude_tap),
        ):
            answers = [
                await chat(gpt, "Weather in Paris?"),
                await chat(gpt, "Weather in Rome?", stream=True),
                await message(claude, "Weather in Oslo?"),
                await message(claude, "Weather in Lima?", stream=True),
            ]
        return answers, gpt_tap, claude_tap

    recording = serves.start(config)
    recorded, recorded_gpt, recorded_claude = await ask_all(recording.url)
    recording.process.stop()
    address = main.url
    await main.server.close()  # nothing listens at the target's address any more
    config.write_text(one_target(address, "offline"))
    offline = serves.start(config)

    replayed, replayed_gpt, replayed_claude = await ask_all(offline.url)
    assert replayed == recorded
    assert [a.pieces for a in replayed_gpt.answers] == [a.pieces for a in recorded_gpt.answers]
    assert [a.pieces for a in replayed_claude.answers] == [a.pieces for a in recorded_claude.answers]
    assert len(main.target.received) == 4

    async with openai_client(offline.url + "/v1") as (gpt, _), anthropic_client(offline.url) as (claude, _):
        for prompt, options in (
            ("Weather in Quito?", {}),  # never asked
            ("Weather in Paris?", {"model": "gpt-4.1"}),  # another model
            ("Weather in Paris?", {"temperature": 0.2}),  # another body
            ("Weather in Paris?", {"extra_headers": {"Accept-Encoding": "identity"}}),
            ("Weather in Rome?", {}),  # asked streamed only
        ):
            with pytest.raises(openai.APIStatusError) as refused:
                await chat(gpt, prompt, **options)
            assert refused.value.status_code == 504
            assert refused.value.code == "cache_offline_miss"
            assert "POST /v1/chat/completions on target main" in refused.value.message
        with pytest.raises(anthropic.APIStatusError) as refused_claude:
            await message(claude, "Weather in Lima?", model="claude-opus-4-1", stream=True)
        assert refused_claude.value.status_code == 504
        assert isinstance(refused_claude.value.body, dict)
        assert refused_claude.value.body["error"]["code"] == "cache_offline_miss"
    assert offline.cache_outcomes(10) == ["hit"] * 4 + ["offline-miss"] * 6


async def test_a_changed_body_model_or_accept_encoding_is_sent_to_the_target(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    main = await targets("main")
    serving = serves.start(config_file(tmp_path, one_target(main.url, "replay")))
    async with openai_client(serving.url + "/v1") as (client, tapped):
        first = await chat(client, "Weather in Paris?")
        others = [
            await chat(client, "Weather in Paris? "),
            await chat(client, "Weather in Paris?", temperature=0.2),
            await chat(client, "Weather in Paris?", model="gpt-4.1"),
            await chat(client, "Weather in Paris?", extra_headers={"Accept-Encoding": "identity"}),
        ]
        again = await chat(client, "Weather in Paris?")
    assert again == first
    assert [other["id"] for other in others] == ["chatcmpl-2", "chatcmpl-3", "chatcmpl-4", "chatcmpl-5"]
    assert len(main.target.received) == 5
    assert tapped.answers[0].header("Content-Encoding") == "gzip"
    assert tapped.answers[4].header("Content-Encoding") is None  # asked for, and got, plain bytes
    assert json.loads(tapped.answers[4].body)["id"] == "chatcmpl-5"
    assert serving.cache_outcomes(6) == ["miss"] * 5 + ["hit"]


async def test_no_store_is_neither_answered_from_the_recording_nor_recorded(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    main = await targets("main")
    serving = serves.start(config_file(tmp_path, one_target(main.url, "replay")))
    async with openai_client(serving.url + "/v1") as (client, _):
        stored = await chat(client, "Weather in Paris?")
        fresh = await chat(client, "Weather in Paris?", extra_headers=NO_STORE)
        again = await chat(client, "Weather in Paris?")
        private = [await chat(client, "My diary", extra_headers=NO_STORE, stream=True) for _ in range(2)]
        after = await chat(client, "Weather in Oslo?")
    assert fresh["id"] == "chatcmpl-2"  # sent to the target, not answered from the recording
    assert again == stored  # and its answer did not replace the recorded one
    assert [streamed_text(chunks).split(" ")[1] for chunks in private] == ["3", "4"]
    assert after["id"] == "chatcmpl-5"
    assert main.target.prompts() == [
        "Weather in Paris?",
        "Weather in Paris?",
        "My diary",
        "My diary",
        "Weather in Oslo?",
    ]
    # Recordings are written in order: once Oslo's is there, any of the diary's would be too.
    assert wait_until(lambda: "Weather in Oslo?" in recorded_prompts(), timeout_s=WRITTEN_TIMEOUT_S)
    assert recorded_prompts() == ["Weather in Paris?", "Weather in Oslo?"]
    assert serving.cache_outcomes(6) == ["miss", "bypass", "hit", "bypass", "bypass", "miss"]


async def test_a_hit_on_a_routed_target_contacts_neither_it_nor_its_fallback(
    targets: StartTarget, serves: Serves, tmp_path: Path
) -> None:
    """``main`` (the default route) and ``claude`` (``/claude``) record their answers; both
    fall back to ``spare``. Repeats come from the recording, also while main and claude fail;
    an answer the fallback gave is not main's, so its repeat is sent again."""
    main, claude, spare = await targets("main"), await targets("claude"), await targets("spare")
    config = config_file(
        tmp_path,
        f'active = "main"\n\n[targets.main]\nurl = "{main.url}"\ncache = "replay"\nfallbacks = ["spare"]\n\n'
        f'[targets.claude]\nurl = "{claude.url}"\ncache = "replay"\nprefix = "/claude"\nfallbacks = ["spare"]\n\n'
        f'[targets.spare]\nurl = "{spare.url}"\n',
    )
    serving = serves.start(config)

    async def ask_both() -> tuple[Any, Any]:
        """Paris through the openai SDK on the default route, Oslo streamed through the
        anthropic SDK under /claude."""
        async with openai_client(serving.url + "/v1") as (gpt, _):
            paris = await chat(gpt, "Weather in Paris?")
        async with anthropic_client(serving.url + "/claude") as (sonnet, _):
            return paris, await message(sonnet, "Weather in Oslo?", stream=True)

    def counts() -> tuple[int, int, int]:
        return len(main.target.received), len(claude.target.received), len(spare.target.received)

    first = await ask_both()
    assert counts() == (1, 1, 0)
    assert await ask_both() == first
    main.target.failing = claude.target.failing = 503
    assert await ask_both() == first
    assert counts() == (1, 1, 0)

    async with openai_client(serving.url + "/v1") as (gpt, _):
        rescued = await chat(gpt, "Weather in Rome?")  # main answers 503, spare takes over
        assert rescued["choices"][0]["message"]["content"] == 'answer 1 from spare to "Weather in Rome?"'
        assert counts() == (2, 1, 1)
        # Not main's answer, so not recorded as main's: the repeat is sent again.
        assert (await chat(gpt, "Weather in Rome?"))["id"] == "chatcmpl-2"
        assert counts() == (3, 1, 2)
        main.target.failing = None
        recovered = await chat(gpt, "Weather in Rome?")
        assert recovered["choices"][0]["message"]["content"] == 'answer 4 from main to "Weather in Rome?"'
        assert await chat(gpt, "Weather in Rome?") == recovered
    assert counts() == (4, 1, 2)
    outcomes = serving.cache_outcomes(10)
    # spare's two answers were sent to be recorded as main's and were not: the line says why.
    assert outcomes == ["miss", "miss", "hit", "hit", "hit", "hit", "unkept", "unkept", "miss", "hit"]
    assert "[not recorded: spare answered, not main]" in serving.access_lines()[6]
    assert "/claude/v1/messages" in serving.access_lines()[1]
