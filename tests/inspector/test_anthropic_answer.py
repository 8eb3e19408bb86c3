"""A streamed Anthropic Messages answer put back together: the same text, thinking, tool calls
and usage the anthropic SDK's own stream helper assembles from the same bytes (served on
127.0.0.1), however the bytes are cut."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from desktop.inspector.anthropic import messages_answer
from desktop.inspector.sse import EventReader


def event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


START = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 10},
}
STREAM = b"".join(
    [
        event("message_start", message=START),
        event(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        ),
        event(
            "content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "The user wants "}
        ),
        event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "the weather."}),
        event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "c2ln"}),
        event("content_block_stop", index=0),
        b'event: ping\ndata: {"type": "ping"}\n\n',
        event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=1, delta={"type": "text_delta", "text": "Checking "}),
        event("content_block_delta", index=1, delta={"type": "text_delta", "text": "Paris… é"}),
        event("content_block_stop", index=1),
        event(
            "content_block_start",
            index=2,
            content_block={"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        ),
        event(
            "content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"city": '}
        ),
        event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '"Paris"}'}),
        event("content_block_stop", index=2),
        event(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 42},
        ),
        event("message_stop"),
    ]
)


async def sdk_final(aiohttp_server: Any) -> Any:
    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(0, len(STREAM), 101):
            await response.write(STREAM[index : index + 101])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with anthropic.DefaultAsyncHttpxClient(trust_env=False) as http:
        client = anthropic.AsyncAnthropic(
            base_url=str(server.make_url("")), api_key="test", http_client=http, max_retries=0
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return await stream.get_final_message()


async def test_the_answer_equals_what_the_anthropic_sdk_assembles(aiohttp_server: Any) -> None:
    final = await sdk_final(aiohttp_server)
    answer = messages_answer(EventReader().feed(STREAM))
    assert (
        answer.text
        == "".join(block.text for block in final.content if block.type == "text")
        == "Checking Paris… é"
    )
    assert answer.thinking == "The user wants the weather."
    # anthropic 0.39 (the floor) predates thinking blocks and leaves them out of its message.
    assert "".join(getattr(b, "thinking", "") for b in final.content if b.type == "thinking") in (
        "",
        answer.thinking,
    )
    tools = [block for block in final.content if block.type == "tool_use"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
        (t.id, t.name, t.input) for t in tools
    ]
    assert answer.finish_reason == final.stop_reason == "tool_use"
    assert answer.usage is not None
    assert (answer.usage["input_tokens"], answer.usage["output_tokens"]) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert answer.usage["cache_read_input_tokens"] == final.usage.cache_read_input_tokens == 10
    assert (answer.model, answer.done, answer.unreadable) == (final.model, True, 0)


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_the_answer_is_the_same_however_the_bytes_were_cut(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    reader = EventReader()
    events = [found for a, b in itertools.pairwise(points) for found in reader.feed(STREAM[a:b])]
    assert messages_answer(events) == messages_answer(EventReader().feed(STREAM))


def test_an_overloaded_error_event_is_the_answers_error() -> None:
    stream = event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    answer = messages_answer(EventReader().feed(stream))
    assert answer.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert (answer.text, answer.done) == ("", False)
