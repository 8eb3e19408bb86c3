"""Recorded exchanges for the cache tests: made to measure, as a recorder would keep them."""

from __future__ import annotations

import json
import time

from desktop.cache.store import RecordedExchange


def chat_exchange(
    prompt: str = "hello",
    *,
    target: str = "openai",
    answer: bytes = b'{"choices":[{"message":{"content":"hi"}}]}',
    pieces: int = 1,
    recorded_at: float | None = None,
    model: str = "gpt-4o-mini",
) -> RecordedExchange:
    """A chat completion's request and its answer, cut into ``pieces`` pieces 10 ms apart."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()
    step = max(1, -(-len(answer) // pieces))
    cut = tuple(
        (index * 0.01, answer[start : start + step])
        for index, start in enumerate(range(0, len(answer), step))
    )
    return RecordedExchange(
        target=target,
        method="POST",
        path="/v1/chat/completions",
        query="",
        request_headers=(("accept", "application/json"),),
        request_body=body,
        vary=(),
        status=200,
        reason="OK",
        response_headers=(("content-type", "application/json"),),
        pieces=cut,
        recorded_at=time.time() if recorded_at is None else recorded_at,
    )
