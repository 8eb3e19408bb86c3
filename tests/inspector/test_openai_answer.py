"""A streamed Chat Completions answer put back together: the same text, tool calls and usage the
openai SDK's own stream helper assembles from the same bytes.

The SDK reads them from a real server on 127.0.0.1 (the bytes as a target sends them); the
inspector's reader gets the same bytes cut anywhere.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import openai
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from desktop.inspector.openai import chat_completion_answer
from desktop.inspector.sse import EventReader


def chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
STREAM = b"".join(
    [
        b": OPENROUTER PROCESSING\n\n",
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check. é"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "time", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({}, finish="tool_calls"),
        chunk(None, usage=USAGE),
        b"data: [DONE]\n\n",
    ]
)


async def sdk_final(aiohttp_server: Any) -> Any:
    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(0, len(STREAM), 97):  # in pieces, as a target sends them
            await response.write(STREAM[index : index + 97])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with httpx.AsyncClient(trust_env=False) as http:
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="test", http_client=http, max_retries=0
        )
        # The stream helper left beta in openai 1.x's later releases; 1.45 (the floor) has it there.
        completions = client.chat.completions
        stream_helper = getattr(completions, "stream", None) or client.beta.chat.completions.stream
        async with stream_helper(model="gpt-test", messages=[{"role": "user", "content": "hi"}]) as stream:
            return await stream.get_final_completion()


async def test_the_answer_equals_what_the_openai_sdk_assembles(aiohttp_server: Any) -> None:
    final = await sdk_final(aiohttp_server)
    message = final.choices[0].message
    answer = chat_completion_answer(EventReader().feed(STREAM))
    assert answer.text == message.content == "Let me check. é"
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        (call.id, call.function.name, call.function.arguments) for call in message.tool_calls or ()
    ]
    assert json.loads(answer.tool_calls[0].arguments) == {"city": "Paris"}
    assert answer.finish_reason == final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert answer.usage == final.usage.model_dump(exclude_none=True) == USAGE
    assert (answer.model, answer.done, answer.unreadable) == ("gpt-test", True, 0)


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_the_answer_is_the_same_however_the_bytes_were_cut(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    reader = EventReader()
    events = [event for a, b in itertools.pairwise(points) for event in reader.feed(STREAM[a:b])]
    whole = chat_completion_answer(EventReader().feed(STREAM))
    assert chat_completion_answer(events) == whole


def test_an_error_in_the_stream_and_unreadable_chunks_are_kept_apart_from_the_text() -> None:
    stream = (
        chunk({"content": "Hi"}) + b"data: not json\n\n" + b'data: {"error": {"message": "overloaded"}}\n\n'
    )
    answer = chat_completion_answer(EventReader().feed(stream))
    assert (answer.text, answer.error, answer.unreadable, answer.done) == (
        "Hi",
        {"message": "overloaded"},
        1,
        False,
    )
