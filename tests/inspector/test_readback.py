"""What the inspector reads back from answers that went through a real TrayProxy: the answer
the SDK itself assembled, the model and the tokens the target reported, and the time to first
token measured where the first token came (a scripted 500 ms wait before it, after the
answer's head: not the time to first byte, not the whole duration)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import pytest
from llm_answers import (
    CHAT_STREAM,
    CHAT_USAGE,
    CHAT_WHOLE,
    FIRST_TOKEN_DELAY_S,
    MESSAGE_WHOLE,
    MESSAGES_STREAM,
    OLLAMA_STREAM,
    RESPONSE_WHOLE,
    RESPONSES_STREAM,
    RESPONSES_USAGE,
)
from scripted_llm import CLIENT_KEY, Inspected, Reply, inspected

from desktop.inspector.readback import ReadAnswer, answer_of

__all__ = ["inspected"]

# The Responses API came in openai 1.66; the floor (1.45) has no client for it.
needs_responses = pytest.mark.skipif(
    not hasattr(openai.AsyncOpenAI, "responses"), reason="this openai has no Responses API"
)
# Strict: openai 1.45's stream helper parses only strict tools' arguments, and refuses others.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
                "additionalProperties": False,
            },
        },
    }
]
HI = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
async def openai_sdk(inspected: Inspected) -> AsyncIterator[openai.AsyncOpenAI]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield openai.AsyncOpenAI(
            base_url=inspected.url + "/v1", api_key=CLIENT_KEY, http_client=http, max_retries=0
        )


@pytest.fixture
async def anthropic_sdk(inspected: Inspected) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.DefaultAsyncHttpxClient(trust_env=False) as http:
        yield anthropic.AsyncAnthropic(
            base_url=inspected.url, api_key=CLIENT_KEY, http_client=http, max_retries=0
        )


def assert_first_token_after_the_wait(facts: dict[str, Any], read: ReadAnswer) -> None:
    """TTFT counts the scripted wait before the first token, and little else."""
    ttft = facts["ttft_ms"]
    assert isinstance(ttft, float)
    assert FIRST_TOKEN_DELAY_S * 1000 <= ttft < FIRST_TOKEN_DELAY_S * 1000 + 100
    assert read.ttft_ms == ttft


async def test_a_streamed_chat_completion_reads_as_the_openai_sdk_assembled_it(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.replies["/v1/chat/completions"] = CHAT_STREAM
    completions = openai_sdk.chat.completions
    stream_helper = getattr(completions, "stream", None) or openai_sdk.beta.chat.completions.stream
    async with stream_helper(model="gpt-asked", messages=HI, tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = await stream.get_final_completion()
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("openai-chat", True)
    message = final.choices[0].message
    assert read.answer.text == message.content == "Checking Paris… é"
    assert [(c.id, c.name, c.arguments) for c in read.answer.tool_calls] == [
        (call.id, call.function.name, call.function.arguments) for call in message.tool_calls or ()
    ]
    assert json.loads(read.answer.tool_calls[0].arguments) == {"city": "Paris", "days": 2}
    assert exchange.facts == {
        "api": "openai-chat",
        "streamed": True,
        "model": "gpt-scripted",  # the answer's, not the one asked for
        "input_tokens": CHAT_USAGE["prompt_tokens"],
        "output_tokens": CHAT_USAGE["completion_tokens"],
        "cached_tokens": 8,
        "ttft_ms": exchange.facts["ttft_ms"] if exchange.facts else None,
        "tokens_per_s": exchange.facts["tokens_per_s"] if exchange.facts else None,
    }
    assert_first_token_after_the_wait(exchange.facts, read)
    assert exchange.response_at is not None
    assert (exchange.response_at - exchange.head.started) < 0.4
    tokens_per_s = exchange.facts["tokens_per_s"]
    assert isinstance(tokens_per_s, float)
    assert tokens_per_s > 12 / FIRST_TOKEN_DELAY_S
    assert len(read.chunk_gaps_ms) == len(exchange.chunks) - 1


async def test_a_whole_chat_completion_reads_as_the_openai_sdk_parsed_it(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.replies["/v1/chat/completions"] = CHAT_WHOLE
    final = await openai_sdk.chat.completions.create(model="gpt-asked", messages=HI, tools=TOOLS)  # type: ignore[arg-type]
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("openai-chat", False)
    message = final.choices[0].message
    assert read.answer.text == message.content == "Sunny."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in read.answer.tool_calls] == [
        (call.id, call.function.name, json.loads(call.function.arguments))
        for call in message.tool_calls or ()
    ]
    assert read.answer.finish_reason == final.choices[0].finish_reason
    assert exchange.facts is not None
    assert (exchange.facts["model"], exchange.facts["input_tokens"], exchange.facts["output_tokens"]) == (
        final.model,
        31,
        12,
    )
    assert exchange.facts["tokens_per_s"] is None  # no stream: no output speed to tell


async def test_a_streamed_anthropic_message_reads_as_the_anthropic_sdk_assembled_it(
    inspected: Inspected, anthropic_sdk: anthropic.AsyncAnthropic
) -> None:
    inspected.replies["/v1/messages"] = MESSAGES_STREAM
    async with anthropic_sdk.messages.stream(
        model="claude-asked",
        max_tokens=100,
        messages=HI,
        tools=[{"name": "weather", "input_schema": {"type": "object"}}],
    ) as stream:
        final = await stream.get_final_message()
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("anthropic-messages", True)
    assert (
        read.answer.text == "".join(b.text for b in final.content if b.type == "text") == "Checking Paris… é"
    )
    tools = [block for block in final.content if block.type == "tool_use"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in read.answer.tool_calls] == [
        (t.id, t.name, t.input) for t in tools
    ]
    assert exchange.facts is not None
    # message_start's input and cache reads with message_delta's output, as the SDK merged them.
    assert (
        exchange.facts["model"],
        exchange.facts["input_tokens"],
        exchange.facts["output_tokens"],
        exchange.facts["cached_tokens"],
    ) == (
        final.model,
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.cache_read_input_tokens,
    )
    assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 42)
    assert_first_token_after_the_wait(exchange.facts, read)


async def test_a_whole_anthropic_message_reads_as_the_anthropic_sdk_parsed_it(
    inspected: Inspected, anthropic_sdk: anthropic.AsyncAnthropic
) -> None:
    inspected.replies["/v1/messages"] = MESSAGE_WHOLE
    final = await anthropic_sdk.messages.create(model="claude-asked", max_tokens=100, messages=HI)  # type: ignore[arg-type]
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("anthropic-messages", False)
    assert read.answer.text == "".join(b.text for b in final.content if b.type == "text") == "Sunny."
    tools = [block for block in final.content if block.type == "tool_use"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in read.answer.tool_calls] == [
        (t.id, t.name, t.input) for t in tools
    ]
    assert exchange.facts is not None
    assert (exchange.facts["model"], exchange.facts["input_tokens"], exchange.facts["output_tokens"]) == (
        "claude-scripted-whole",
        25,
        42,
    )


@needs_responses
async def test_a_streamed_response_reads_as_the_openai_sdk_assembled_it(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.replies["/v1/responses"] = RESPONSES_STREAM
    async with openai_sdk.responses.stream(model="gpt-asked", input="Weather in Paris?") as stream:
        final = await stream.get_final_response()
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("openai-responses", True)
    assert read.answer.text == final.output_text == "Checking Paris."
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in read.answer.tool_calls] == [
        (call.call_id, call.name, json.loads(call.arguments)) for call in calls
    ]
    assert exchange.facts is not None
    assert final.usage is not None
    assert (
        exchange.facts["model"],
        exchange.facts["input_tokens"],
        exchange.facts["output_tokens"],
        exchange.facts["cached_tokens"],
    ) == (final.model, final.usage.input_tokens, final.usage.output_tokens, 12)
    assert_first_token_after_the_wait(exchange.facts, read)


@needs_responses
async def test_a_whole_response_reads_as_the_openai_sdk_parsed_it(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    inspected.replies["/v1/responses"] = RESPONSE_WHOLE
    final = await openai_sdk.responses.create(model="gpt-asked", input="Weather in Paris?")
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("openai-responses", False)
    assert read.answer.text == final.output_text
    assert [c.name for c in read.answer.tool_calls] == ["weather"]
    assert exchange.facts is not None
    assert (exchange.facts["input_tokens"], exchange.facts["output_tokens"]) == (
        RESPONSES_USAGE["input_tokens"],
        RESPONSES_USAGE["output_tokens"],
    )


async def test_an_ollama_ndjson_stream_gives_its_text_tool_call_counts_and_first_token(
    inspected: Inspected,
) -> None:
    inspected.replies["/api/chat"] = OLLAMA_STREAM
    async with (
        aiohttp.ClientSession() as session,
        session.post(inspected.url + "/api/chat", json={"model": "llama-asked", "messages": HI}) as answer,
    ):
        lines = (await answer.read()).splitlines()
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.streamed) == ("ollama", True)
    said = [json.loads(line) for line in lines]
    assert read.answer.text == "".join(part["message"]["content"] for part in said) == "Sure, café."
    assert [(c.name, json.loads(c.arguments)) for c in read.answer.tool_calls] == [
        ("weather", {"city": "Paris"})
    ]
    assert exchange.facts is not None
    assert (exchange.facts["model"], exchange.facts["input_tokens"], exchange.facts["output_tokens"]) == (
        "llama-scripted",
        said[-1]["prompt_eval_count"],
        said[-1]["eval_count"],
    )
    assert_first_token_after_the_wait(exchange.facts, read)


async def test_a_gzip_event_stream_is_read_and_a_brotli_one_is_said_unread(
    inspected: Inspected, openai_sdk: openai.AsyncOpenAI
) -> None:
    """The proxy passes bodies on encoded: gzip (the standard library's) is undone to read the
    answer; brotli is not, and the answer says so instead of showing nothing."""
    whole = b"".join(piece for piece in CHAT_STREAM.pieces if isinstance(piece, bytes))
    squeezed = gzip.compress(whole)
    inspected.replies["/v1/chat/completions"] = Reply(
        [squeezed[:30], squeezed[30:]], headers={"Content-Encoding": "gzip"}
    )
    completion = await openai_sdk.chat.completions.create(model="gpt-asked", messages=HI, stream=True)  # type: ignore[arg-type]
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in completion if chunk.choices])
    exchange = await inspected.settled()
    read = answer_of(exchange)
    assert read is not None
    assert read.answer.text == text == "Checking Paris… é"
    assert exchange.facts is not None
    assert exchange.facts["output_tokens"] == 12
    inspected.replies["/v1/chat/completions"] = Reply(
        [b"\x1b\x02\x00not brotli really"], headers={"Content-Encoding": "br"}
    )
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            inspected.url + "/v1/chat/completions", json={"model": "gpt-asked", "stream": True}
        ) as answer,
    ):
        await answer.read()
    exchange = await inspected.settled(2)
    read = answer_of(exchange)
    assert read is not None
    assert (read.api, read.answer.text) == ("openai-chat", "")
    assert read.problem == "br-encoded body: not decoded"
    assert exchange.facts is not None
    assert exchange.facts["model"] == "gpt-asked"


async def test_facts_stay_when_bodies_are_off(inspected: Inspected, openai_sdk: openai.AsyncOpenAI) -> None:
    """With body capture off, the answer is read once at its end for its facts, then dropped."""
    inspected.store.keep_bodies = False
    inspected.replies["/v1/chat/completions"] = CHAT_STREAM
    completion = await openai_sdk.chat.completions.create(model="gpt-asked", messages=HI, stream=True)  # type: ignore[arg-type]
    [chunk async for chunk in completion]
    exchange = await inspected.settled()
    assert (tuple(exchange.chunks), exchange.request_body) == ((), None)
    assert answer_of(exchange) is None
    assert exchange.facts is not None
    assert (exchange.facts["model"], exchange.facts["output_tokens"]) == ("gpt-scripted", 12)
    assert exchange.facts["ttft_ms"] is not None
    assert not any(isinstance(value, str) and "Paris" in value for value in exchange.facts.values())
