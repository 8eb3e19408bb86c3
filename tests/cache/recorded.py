"""Recorded exchanges for the cache tests: made to measure, as a recorder would keep them."""

from __future__ import annotations

import json
import time

from multidict import CIMultiDict

from desktop.cache.store import RecordedExchange
from desktop.engine.capture import ExchangeEnd
from desktop.engine.recall import RecallRequest, Recorder, Replay


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
        response_headers=(("Content-Type", "application/json"), ("x-request-id", "req_1")),
        pieces=cut,
        recorded_at=time.time() if recorded_at is None else recorded_at,
    )


def ask(
    mode: str = "replay",
    prompt: str = "hello",
    *,
    target: str = "openai",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    query: str = "",
    model: str = "gpt-4o-mini",
) -> RecallRequest:
    """A chat completion request as the engine hands it to the recording."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()
    return RecallRequest(
        mode=mode,  # type: ignore[arg-type]
        target=target,
        method="POST",
        path="/v1/chat/completions",
        query=query,
        body=body,
        raw_headers=(
            (b"Content-Type", b"application/json"),
            (b"Authorization", b"Bearer sk-client-own-key"),
            *headers,
        ),
    )


def answer(
    recorder: Recorder,
    pieces: list[bytes],
    *,
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    note: str = "",
    gap_s: float = 0.0,
    start: float = 100.0,
    end: bool = True,
) -> None:
    """Tell ``recorder`` of an answer as the engine would: head, pieces ``gap_s`` apart, end."""
    recorder.response(status, "OK" if status == 200 else "Nope", CIMultiDict(headers), start)
    at = start
    for piece in pieces:
        recorder.chunk(piece, at)
        at += gap_s
    if end:
        finish(recorder, status, note)


def finish(recorder: Recorder, status: int = 200, note: str = "") -> None:
    recorder.end(
        ExchangeEnd(
            status=status,
            note=note,
            error="",
            target="openai",
            chosen_by="",
            attempts=(),
            bytes_down=0,
            own_body=None,
            websocket=None,
            ended=0.0,
        )
    )


async def replayed(replay: Replay) -> list[bytes]:
    """Every piece ``replay`` gives."""
    return [piece async for piece in replay.pieces]
