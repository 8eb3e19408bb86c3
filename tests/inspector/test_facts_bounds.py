"""Reading an ended exchange's facts stays cheap on the proxy's loop, whatever the answer.

The store reads every ended exchange back on the event loop that forwards requests: a large
whole JSON answer (embeddings) or a small gzip body that inflates without end must not stall
it or take memory past the inspector's bounds. Figures from before: a 7.4 MiB answer held the
loop 174 ms, a 60 KiB gzip bomb 297 ms and ~180 MiB.
"""

from __future__ import annotations

import gzip
import json
import time

from multidict import CIMultiDict

from desktop.engine.capture import ExchangeEnd, RequestHead
from desktop.inspector.readback import facts_of
from desktop.inspector.store import Exchange

PIECE = 64 * 1024


def ended(path: str, body: bytes, headers: dict[str, str]) -> Exchange:
    head = RequestHead("POST", path, "HTTP/1.1", (), 8000, False, 0.0)
    exchange = Exchange.of(
        id=1, wall_started=0.0, head=head, request_body=b'{"model": "text-embedding-3-large"}'
    )
    exchange.status, exchange.response_headers, exchange.response_at = 200, CIMultiDict(headers), 0.01
    exchange.chunks = [body[i : i + PIECE] for i in range(0, len(body), PIECE)]
    exchange.chunk_times = [0.02] * len(exchange.chunks)
    exchange.response_bytes = len(body)
    exchange.end = ExchangeEnd(200, "", "", "openai", "", (), len(body), None, None, 0.5)
    return exchange


def timed(exchange: Exchange) -> tuple[dict[str, object], float]:
    started = time.perf_counter()
    facts = facts_of(exchange)
    return facts, time.perf_counter() - started


def test_a_large_whole_answer_gives_its_usage_without_being_parsed_whole() -> None:
    vectors = [{"object": "embedding", "index": i, "embedding": [0.0123456789] * 1536} for i in range(300)]
    body = json.dumps(
        {
            "object": "list",
            "data": vectors,
            "model": "text-embedding-3-large",
            "usage": {"prompt_tokens": 4242, "total_tokens": 4242},
        }
    ).encode()
    assert len(body) > 5 * 1024 * 1024
    facts, seconds = timed(ended("/v1/embeddings", body, {"Content-Type": "application/json"}))
    assert facts["input_tokens"] == 4242
    assert facts["model"] == "text-embedding-3-large"
    assert seconds < 0.05  # json.loads of it alone takes ~100 ms here


def test_a_gzip_bomb_is_not_inflated_past_a_few_mebibytes_for_its_facts() -> None:
    bomb = gzip.compress(b" " * (60 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100 * 1024
    exchange = ended(
        "/v1/chat/completions", bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    facts, seconds = timed(exchange)
    assert facts["input_tokens"] is None
    assert seconds < 0.1  # inflating all 60 MiB took ~300 ms and ~180 MiB


def test_a_small_answer_of_another_kind_still_says_what_it_cost() -> None:
    """An embeddings answer is none of the four chat APIs, yet its usage is on the bill."""
    body = json.dumps(
        {
            "object": "list",
            "data": [{"embedding": [0.1] * 8}],
            "model": "m-embed",
            "usage": {"prompt_tokens": 7},
        }
    ).encode()
    facts = facts_of(ended("/v1/embeddings", body, {"Content-Type": "application/json"}))
    assert (facts["input_tokens"], facts["model"]) == (7, "m-embed")


def test_a_body_of_no_api_is_listed_without_facts() -> None:
    """A model list (the benchmark's small request) is read for nothing but the model asked for."""
    facts = facts_of(
        ended("/v1/models", b'{"object":"list","data":[]}', {"Content-Type": "application/json"})
    )
    assert facts["api"] is None
    assert facts["input_tokens"] is None


def test_a_gzip_bomb_is_shown_and_exported_small() -> None:
    """The detail and the HAR of a 200 KB gzip answer inflating to 200 MiB of NULs were 100 MB
    each and took serve past 2 GB for a few of them (second cold trial): decoded, a body may be
    16 times what was kept, at least 1 MiB."""
    from desktop.inspector import har, views

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    exchange = ended(
        "/v1/chat/completions", bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    detail = json.dumps(views.detail_json(exchange))
    assert len(detail) < 16 * 1024 * 1024
    assert "only its start is read" in detail
    assert len(har.har_bytes([exchange])) < 16 * 1024 * 1024
