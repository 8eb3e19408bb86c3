"""What the start of a target's answer says, for failover to decide before the client sees it.

``retry_after_s`` reads a 429's ``Retry-After``; ``first_bytes`` reads a 200's first bytes, up to
its first whole SSE event (comments skipped, bounded in size and time), and says whether they
make it a failure: an ``error`` event (Anthropic, OpenAI Responses; a ``data:`` JSON object with
an ``error`` set, as OpenAI chat completions and gateways stream theirs), or an empty body where
content was promised. Nothing here is decoded beyond that, and a compressed stream's first chunk
goes on as it is (the proxy never decodes bodies).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import time

import aiohttp
from aiohttp import hdrs

__all__ = ["FIRST_EVENT_WAIT_S", "MAX_FIRST_EVENT_BYTES", "first_bytes", "retry_after_s"]

# How long the first event of a stream may take to be whole once its first bytes came.
FIRST_EVENT_WAIT_S = 10.0
# How much of a stream is read to find its first SSE event before it is passed on anyway.
MAX_FIRST_EVENT_BYTES = 64 * 1024


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (RFC 9110 §10.2.3: delay-seconds or an
    HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():  # "²" is a digit to str.isdigit, not to float
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # asctime's form carries no zone; HTTP dates are always GMT (RFC 9110 §5.6.7).
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _event_blocks(data: bytes) -> tuple[list[str], bool]:
    """The blocks of ``data`` (an event stream's start) that are events rather than comments
    alone (WHATWG SSE: a line starting with ':' is a comment, which gateways send while they
    wait), and whether the first such block is complete (a blank line ends it)."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    blocks = text.split("\n\n")
    events = [
        block for block in blocks[:-1] if any(line and not line.startswith(":") for line in block.split("\n"))
    ]
    if events:
        return events, True
    tail = blocks[-1]
    return ([tail] if tail.strip() else []), False


def _after_last_block(data: bytes) -> bytes:
    """What follows the last blank line of ``data``, its line ends made LF (as _event_blocks
    reads them); all of ``data`` when it has none."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    at = text.rfind(b"\n\n")
    return text if at < 0 else text[at + 2 :]


def _first_event_error(data: bytes) -> bool:
    """True when the first SSE event in ``data`` (complete or not; comments skipped) is an
    error: named ``error`` (Anthropic, OpenAI Responses) or carrying a JSON object whose
    top-level ``error`` is set (OpenAI chat completions and gateways that stream errors)."""
    events, _ = _event_blocks(data)
    if not events:
        return False
    payload = []
    for line in events[0].split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event" and value.strip() == "error":
            return True
        if name == "data":
            payload.append(value)
    if not payload:
        return False
    try:
        parsed = json.loads("\n".join(payload))
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("error") not in (None, False, "", {}, [])


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get(hdrs.CONTENT_TYPE, "").lower().startswith("text/event-stream")


async def first_bytes(response: aiohttp.ClientResponse, request_method: str) -> tuple[bytes, str | None]:
    """The first body bytes of a 2xx answer, and why they make it a failure ("empty answer",
    "error event") or None. For an event stream, read until its first event is complete."""
    body = response.content
    pieces: list[bytes] = []
    size = 0
    # A compressed stream's events cannot be read without decoding it, which the proxy never
    # does: its first chunk goes on as it is.
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    stream = _is_event_stream(response) and encoding in ("", "identity")
    loop = asyncio.get_running_loop()
    deadline = 0.0
    # What follows the last whole block, all comments until then: only it is looked at again.
    unread = b""
    while True:
        if pieces:
            # Past the first bytes the wait is bounded as a whole too: a target dripping a
            # byte at a time never completes an event, and its answer then goes on as it is.
            window = asyncio.timeout_at(deadline)
            try:
                async with window:
                    piece = await body.readany()
            except TimeoutError:
                if not window.expired():
                    raise  # the target's own read timeout: a failure, not this bound
                break
        else:
            piece = await body.readany()
        if not piece:
            break
        if not pieces:
            deadline = loop.time() + FIRST_EVENT_WAIT_S  # counted from the first bytes
        pieces.append(piece)
        size += len(piece)
        if not stream or size >= MAX_FIRST_EVENT_BYTES:
            break
        unread += piece
        if _event_blocks(unread)[1]:
            break  # the first event (past any comments) is whole
        # Whole blocks so far were comments alone: they need no second look (a stream of
        # keep-alive comments costs a pass over each once, not over all of them each time).
        unread = _after_last_block(unread)
    data = b"".join(pieces)
    if not data:
        # Empty is a failure only where content was asked for and promised: a POST answered
        # with a Content-Type and nothing (a model server that gave up). An empty 200 without
        # one is how some APIs say done (Ollama's delete and copy).
        if request_method == "POST" and response.headers.get(hdrs.CONTENT_TYPE):
            return data, "empty answer"
        return data, None
    if stream and _first_event_error(data):
        return data, "error event"
    return data, None
