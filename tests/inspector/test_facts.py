"""The facts of a long streamed answer (model, tokens, time to first token), read from its head
and its last events only, are those the whole answer gives, whatever its line ends and however
its bytes came in; and reading them stays cheap for an answer of a million characters (it runs
on the proxy's loop at each exchange's end)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from desktop.engine.capture import ExchangeEnd, RequestHead
from desktop.inspector.readback import answer_of, facts_of, usage_counts
from desktop.inspector.store import Exchange

TOKENS = 300


def sse(kind: str | None, data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {kind}\n" if kind else "").encode() + f"data: {text}\n\n".encode()


def chat(tokens: int) -> bytes:
    def chunk(delta: dict[str, Any] | None, **more: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
        return sse(None, {"object": "chat.completion.chunk", "model": "gpt-long", "choices": choices, **more})

    usage = {
        "prompt_tokens": 900,
        "completion_tokens": tokens,
        "prompt_tokens_details": {"cached_tokens": 512},
    }
    return b"".join(
        [
            chunk({"role": "assistant", "content": ""}),
            *(chunk({"content": f"word{n} "}) for n in range(tokens)),
            chunk({}),
            chunk(None, usage=usage),
            b"data: [DONE]\n\n",
        ]
    )


def messages(tokens: int) -> bytes:
    def event(kind: str, **data: Any) -> bytes:
        return sse(kind, {"type": kind, **data})

    start = {
        "model": "claude-long",
        "usage": {"input_tokens": 700, "output_tokens": 1, "cache_read_input_tokens": 300},
    }
    return b"".join(
        [
            event("message_start", message=start),
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            *(
                event("content_block_delta", index=0, delta={"type": "text_delta", "text": f"word{n} "})
                for n in range(tokens)
            ),
            event("content_block_stop", index=0),
            event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": tokens}),
            event("message_stop"),
        ]
    )


def ollama(tokens: int) -> bytes:
    def line(**part: Any) -> bytes:
        return json.dumps({"model": "llama-long", **part}).encode() + b"\n"

    return b"".join(
        [
            *(line(message={"role": "assistant", "content": f"word{n} "}, done=False) for n in range(tokens)),
            line(
                message={"role": "assistant", "content": ""},
                done=True,
                prompt_eval_count=50,
                eval_count=tokens,
            ),
        ]
    )[:-1]  # the last line without its line end


STREAMS = {
    "/v1/chat/completions": (chat, "text/event-stream"),
    "/v1/messages": (messages, "text/event-stream"),
    "/api/chat": (ollama, "application/x-ndjson"),
}


def exchange_of(path: str, body: bytes, cuts: list[int], content_type: str) -> Exchange:
    points = [0, *sorted(set(cuts)), len(body)]
    chunks = [body[a:b] for a, b in itertools.pairwise(points) if b > a]
    head = RequestHead("POST", path, "HTTP/1.1", (), 8000, False, started=100.0)
    exchange = Exchange.of(
        1, 0.0, head, status=200, response_headers=CIMultiDict({"Content-Type": content_type})
    )
    exchange.chunks = chunks
    exchange.chunk_times = [100.0 + 0.01 * (n + 1) for n in range(len(chunks))]
    exchange.response_bytes = len(body)
    exchange.end = ExchangeEnd(
        200, "", "", "t", "", (), len(body), None, None, 100.0 + 0.01 * (len(chunks) + 1)
    )
    return exchange


def whole_facts(exchange: Exchange) -> tuple[Any, ...]:
    read = answer_of(exchange)
    assert read is not None
    return (read.api, read.answer.model, *usage_counts(read.answer.usage), read.ttft_ms)


def quick_facts(exchange: Exchange) -> tuple[Any, ...]:
    facts = facts_of(exchange)
    names = ("api", "model", "input_tokens", "output_tokens", "cached_tokens", "ttft_ms")
    return tuple(facts[name] for name in names)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(STREAMS)),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0, max_value=40_000), max_size=30),
)
def test_the_facts_read_from_head_and_tail_are_those_of_the_whole_answer(
    path: str, line_end: bytes, cuts: list[int]
) -> None:
    make, content_type = STREAMS[path]
    body = make(TOKENS)
    if content_type == "text/event-stream":
        body = body.replace(b"\n", line_end)
    exchange = exchange_of(path, body, [cut % len(body) for cut in cuts], content_type)
    quick = quick_facts(exchange)
    assert quick == whole_facts(exchange)
    assert quick[3] == TOKENS  # the output tokens: the very last events' usage
    assert quick[5] is not None


def test_reading_the_facts_of_a_million_character_answer_takes_milliseconds() -> None:
    """8,000 tokens in 1,400-byte pieces: read whole, the answer takes about 100 ms of the
    proxy's loop on a laptop; its facts must take a small part of that."""
    body = chat(8000)
    assert len(body) > 1_000_000
    exchange = exchange_of(
        "/v1/chat/completions", body, list(range(1400, len(body), 1400)), "text/event-stream"
    )
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        facts = facts_of(exchange)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    answer_of(exchange)
    whole = time.perf_counter() - started
    assert facts["output_tokens"] == 8000
    assert min(timings) < whole / 5
