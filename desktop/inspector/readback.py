"""An ended exchange's answer read back: which API, the reassembled answer, its timing, its facts.

``answer_of`` reads what the store kept of a response (the pieces as the client got them, each
with the loop time it came from the target) once, in order: Content-Encoding undone where the
standard library can (gzip, deflate), events or lines read a piece at a time, so the piece
that first carried output (text, thinking or a piece of a tool call) is known: its loop time
less the request's arrival is the time to first token, measured where it happens rather than
at the end (litellm#25598 reports TTFT equal to the whole duration).

``facts_of`` is the store's ``read_back``: the metadata a list row shows (model, tokens, time
to first token, tokens per second, API), never text, so it stays when bodies are off.

Which API: by the path (``.../chat/completions``, ``.../responses``, ``.../messages``,
Ollama's ``/api/chat`` and ``/api/generate``), else by the answer's shape; streamed when the
answer is an event stream (``text/event-stream``) or NDJSON (``application/x-ndjson``).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from desktop.inspector.answer import Answer
from desktop.inspector.anthropic import message_json, messages_answer
from desktop.inspector.encoding import BodyDecoder, decoded_pieces, response_header
from desktop.inspector.ollama import ndjson_answer, ollama_json
from desktop.inspector.openai import chat_completion_answer, chat_completion_json
from desktop.inspector.outputs import api_of_object
from desktop.inspector.responses import responses_answer, responses_json
from desktop.inspector.sse import Event
from desktop.inspector.store import Exchange
from desktop.inspector.streams import read_stream

__all__ = ["ReadAnswer", "answer_of", "chunk_gaps_ms", "facts_of", "usage_counts"]

# Facts are read on the proxy's loop once an exchange ends: an answer decoded past this is
# not read for them (a gzip bomb must not hold the loop or the memory), and a whole JSON answer
# larger than WHOLE_FACTS_BYTES is not parsed whole: its usage is looked for in its last
# TAIL_BYTES (where the APIs put it), so a 7 MiB embeddings answer costs microseconds.
FACTS_DECODED_BYTES = 4 * 1024 * 1024
WHOLE_FACTS_BYTES = 512 * 1024
TAIL_BYTES = 16 * 1024

STREAM_TYPES = {"text/event-stream": "sse", "application/x-ndjson": "ndjson", "application/jsonl": "ndjson"}

_BY_PATH = (
    ("/chat/completions", "openai-chat"),
    ("/responses", "openai-responses"),
    ("/messages", "anthropic-messages"),
    ("/api/chat", "ollama"),
    ("/api/generate", "ollama"),
)
_STREAM_READERS: dict[str, Callable[[list[Event]], Answer]] = {
    "openai-chat": chat_completion_answer,
    "openai-responses": responses_answer,
    "anthropic-messages": messages_answer,
}
_WHOLE_READERS: dict[str, Callable[[dict[str, Any]], Answer]] = {
    "openai-chat": chat_completion_json,
    "openai-responses": responses_json,
    "anthropic-messages": message_json,
    "ollama": ollama_json,
}


@dataclass(slots=True)
class ReadAnswer:
    """What an exchange's answer says, and when its output came."""

    api: str  # "openai-chat" | "openai-responses" | "anthropic-messages" | "ollama"
    streamed: bool
    answer: Answer
    first_output_at: float | None = None  # loop time of the first piece that carried output
    ttft_ms: float | None = None
    chunk_gaps_ms: list[float] = field(default_factory=list)
    cut: bool = False  # the body passed its cap: the answer is what its start says
    problem: str = ""  # why the body could not be read (whole), or ""


def answer_of(exchange: Exchange) -> ReadAnswer | None:
    """The answer of an ended exchange, or None when there is none to read (no body kept, a
    WebSocket, an answer of no API known here)."""
    return _read(exchange, whole=True)


def _read(exchange: Exchange, *, whole: bool) -> ReadAnswer | None:
    """The answer; not ``whole``: a stream's head and last events only (streams.py), enough
    for its facts, not for its text."""
    if exchange.head.websocket or not exchange.chunks:
        return None
    media = response_header(exchange, "Content-Type").split(";", 1)[0].strip().lower()
    api = _api_by_path(exchange.head.raw_path)
    encoding = response_header(exchange, "Content-Encoding")
    decoder = BodyDecoder(encoding) if whole else BodyDecoder(encoding, limit=FACTS_DECODED_BYTES)
    pieces = decoded_pieces(exchange, decoder)
    first = next(pieces, None)
    if first is None:
        return _unread(api, media, decoder.problem, exchange)
    mode = STREAM_TYPES.get(media) or ("sse" if first[0].lstrip()[:6] in (b"data:", b"event:") else "json")
    if mode == "json" and not whole and exchange.response_bytes > WHOLE_FACTS_BYTES:
        read = _read_tail(api, first[0], pieces)
    elif mode == "json":
        read = _read_whole(api, [first[0], *(data for data, _ in pieces)], first[1])
    else:
        api, items, first_output_at = read_stream(api, mode, itertools.chain([first], pieces), whole=whole)
        read = _stream_answer(api, mode, items, first_output_at)
    if read is None:
        return None
    if whole:
        read.chunk_gaps_ms = chunk_gaps_ms(exchange)
    read.cut = exchange.body_cut
    read.problem = decoder.problem
    if read.first_output_at is not None:
        read.ttft_ms = round((read.first_output_at - exchange.head.started) * 1000, 1)
    return read


def chunk_gaps_ms(exchange: Exchange) -> list[float]:
    """The time between each two pieces of the response that came in, in ms."""
    return [round((b - a) * 1000, 1) for a, b in itertools.pairwise(exchange.chunk_times)]


def _unread(api: str, media: str, problem: str, exchange: Exchange) -> ReadAnswer | None:
    """An answer whose body could not be decoded: its API and why, no content."""
    if not api or not problem:
        return None
    streamed = media in STREAM_TYPES
    return ReadAnswer(api, streamed, Answer(), cut=exchange.body_cut, problem=problem)


def _read_whole(api: str, parts: list[bytes], at: float) -> ReadAnswer | None:
    try:
        body = json.loads(b"".join(parts))
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    api = api or api_of_object(body)
    if not api:
        # No answer of the four APIs, but one that may say what it cost (embeddings).
        usage, model = body.get("usage"), body.get("model")
        if not isinstance(usage, dict):
            return None
        return ReadAnswer("", False, Answer(usage=usage, model=model if isinstance(model, str) else None))
    answer = _WHOLE_READERS[api](body)
    has_output = bool(answer.text or answer.thinking or answer.tool_calls)
    return ReadAnswer(api, False, answer, first_output_at=at if has_output else None)


# What a whole answer of one of the four APIs holds near its start (outputs.api_of_object).
_ANSWER_MARKS = (b'"choices"', b'"chat.completion', b'"response"', b'"message"', b'"done"')


def _may_be_an_answer(start: bytes) -> bool:
    """Whether a JSON body on a path of no known API may still be an answer: one of the
    members outputs.api_of_object looks for appears in it (searching costs far less than
    parsing every body the proxy carries)."""
    return any(mark in start for mark in _ANSWER_MARKS)


def _read_tail(api: str, first: bytes, pieces: Iterator[tuple[bytes, float]]) -> ReadAnswer | None:
    """A large whole JSON answer's facts from its end: the last ``"usage": {...}`` object (and
    ``"model"`` from its start), without parsing the rest."""
    tail = first[-TAIL_BYTES:]
    for data, _ in pieces:
        tail = (tail + data)[-TAIL_BYTES:]
    answer = Answer()
    model = re.search(rb'"model"\s*:\s*"([^"\\]{1,200})"', first[:TAIL_BYTES])
    if model is not None:
        answer.model = model.group(1).decode("utf-8", "replace")
    at = tail.rfind(b'"usage"')
    if at >= 0:
        start = tail.find(b"{", at)
        try:
            usage, _ = (
                json.JSONDecoder().raw_decode(tail[start:].decode("utf-8", "replace"))
                if start >= 0
                else (None, 0)
            )
        except ValueError:
            usage = None
        if isinstance(usage, dict):
            answer.usage = usage
    return ReadAnswer(api or "", False, answer)


def _stream_answer(api: str, mode: str, items: list[Any], first_output_at: float | None) -> ReadAnswer | None:
    if not api:
        return None
    if mode == "sse":
        answer = _STREAM_READERS.get(api, chat_completion_answer)(items)
    else:
        answer = ndjson_answer(items)
    return ReadAnswer(api, True, answer, first_output_at=first_output_at)


def facts_of(exchange: Exchange) -> dict[str, object]:
    """The store's ``read_back``: model, tokens, time to first token, tokens per second, API.
    Metadata only: no text of the prompt or the answer."""
    if _no_answer(exchange):
        # The common case on a busy proxy that is not an LLM call (a model list, a health
        # check, a download): a row with its requested model, read in a microsecond.
        return {**_NO_FACTS, "model": _requested_model(exchange)}
    read = _read(exchange, whole=False)
    answer = read.answer if read is not None else None
    input_tokens, output_tokens, cached_tokens = usage_counts(answer.usage if answer else None)
    model = answer.model if answer is not None and answer.model else _requested_model(exchange)
    tokens_per_s = None
    # A replayed answer's speed is the replay's (as fast as the tool reads), not the model's.
    replayed = exchange.end is not None and exchange.end.cache == "hit"
    if read is not None and read.streamed and output_tokens and read.first_output_at is not None and not replayed:
        # Output speed once the output began: the wait before the first token is not in it.
        ended = exchange.end.ended if exchange.end is not None else exchange.chunk_times[-1]
        if ended > read.first_output_at:
            tokens_per_s = round(output_tokens / (ended - read.first_output_at), 1)
    return {
        "api": read.api if read is not None else None,
        "streamed": read.streamed if read is not None else None,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "ttft_ms": read.ttft_ms if read is not None else None,
        "tokens_per_s": tokens_per_s,
    }


_NO_FACTS: dict[str, object] = dict.fromkeys(
    ("api", "streamed", "model", "input_tokens", "output_tokens", "cached_tokens", "ttft_ms", "tokens_per_s")
)


def _no_answer(exchange: Exchange) -> bool:
    """Whether the exchange surely carries no answer worth reading: a path of none of the four
    APIs, a body that is no stream, none of their members in its start and no usage at its end
    (before any decoding: an encoded body on such a path is not read for facts)."""
    if not exchange.chunks or exchange.head.websocket:
        return True
    if _api_by_path(exchange.head.raw_path):
        return False
    media = response_header(exchange, "Content-Type").split(";", 1)[0].strip().lower()
    if media in STREAM_TYPES:
        return False
    start = exchange.chunks[0][:4096]
    if start.lstrip()[:6].startswith((b"data:", b"event:")) or _may_be_an_answer(start):
        return False
    # An answer of another kind that still says what it cost (embeddings): usage at its end.
    return b'"usage"' not in exchange.chunks[-1][-4096:]


def usage_counts(usage: dict[str, Any] | None) -> tuple[int | None, int | None, int | None]:
    """(input, output, cached) tokens from any of the four APIs' usage objects: OpenAI's
    prompt/completion_tokens (cached in prompt_tokens_details), Responses' and Anthropic's
    input/output_tokens (cached in input_tokens_details, or Anthropic's cache reads), Ollama's
    prompt_eval_count/eval_count."""
    if not usage:
        return None, None, None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else None
    return (
        _count(usage, "prompt_tokens", "input_tokens", "prompt_eval_count"),
        _count(usage, "completion_tokens", "output_tokens", "eval_count"),
        cached if cached is not None else _count(usage, "cache_read_input_tokens"),
    )


def _count(values: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _requested_model(exchange: Exchange) -> str | None:
    body = exchange.request_body
    if not body or b'"model"' not in body:
        return None
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = request.get("model") if isinstance(request, dict) else None
    return model if isinstance(model, str) else None


@functools.lru_cache(maxsize=1024)  # tools send the same few paths again and again
def _api_by_path(raw_path: str) -> str:
    path = raw_path.split("?", 1)[0].rstrip("/")
    return next((api for ending, api in _BY_PATH if path.endswith(ending)), "")
