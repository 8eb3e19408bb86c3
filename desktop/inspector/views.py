"""An exchange as the page and the exports show it: plain JSON, every key masked (masking.py).

``row_json`` is a list row and a push event: metadata only, never a body or any of its text,
so the list and the push stream stay small whatever passed. ``detail_json`` adds the headers,
the bodies, the reassembled answer, the gaps between chunks and a copyable cURL.
The shapes are the inspector's contract (the page's app.js and the exports read them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from desktop.inspector.curl import curl_command
from desktop.inspector.encoding import decoded_body, response_header
from desktop.inspector.masking import Masker
from desktop.inspector.readback import ReadAnswer, answer_of, chunk_gaps_ms
from desktop.inspector.store import Exchange

__all__ = ["answer_json", "detail_json", "iso_time", "row_json"]


def row_json(exchange: Exchange) -> dict[str, Any]:
    """The exchange's list row (no bodies, no body text)."""
    return _row(exchange, Masker(exchange.head, exchange.request_body))


def detail_json(exchange: Exchange) -> dict[str, Any]:
    """The row with the headers, bodies, answer, chunk gaps and cURL of the exchange."""
    masker = Masker(exchange.head, exchange.request_body)
    read = answer_of(exchange)
    request_headers = [
        (n.decode("latin-1"), v.decode("utf-8", "replace")) for n, v in exchange.head.raw_headers
    ]
    response_headers = exchange.response_header_pairs()
    return {
        **_row(exchange, masker),
        "request_headers": masker.headers(request_headers),
        "response_headers": masker.headers(response_headers),
        "request_body": _request_body(exchange, masker),
        "response_body": _response_body(exchange, masker),
        "answer": answer_json(read, masker),
        "chunk_gaps_ms": chunk_gaps_ms(exchange),
        "curl": curl_command(exchange, masker),
    }


def _row(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    head, end = exchange.head, exchange.end
    facts = exchange.facts or {}
    model = facts.get("model")
    return {
        "id": exchange.id,
        "time": iso_time(exchange.wall_started),
        "method": head.method,
        "path": masker.path(head.raw_path),
        "port": head.port,
        "kind": "websocket" if head.websocket else "http",
        "state": "open" if end is None else "done",
        "status": (end.status if end is not None else exchange.status) or None,
        "route": masker.text(end.chosen_by) if end is not None else "",
        "target": masker.text(end.target) if end is not None else "",
        "attempts": [masker.text(attempt) for attempt in end.attempts] if end is not None else [],
        "ttfb_ms": _ms(exchange.response_at, head.started),
        "ttft_ms": facts.get("ttft_ms"),
        "duration_ms": _ms(end.ended, head.started) if end is not None else None,
        "bytes_up": _bytes_up(exchange),
        "bytes_down": end.bytes_down if end is not None else exchange.response_bytes,
        "model": masker.text(model) if isinstance(model, str) else None,
        "input_tokens": facts.get("input_tokens"),
        "output_tokens": facts.get("output_tokens"),
        "cached_tokens": facts.get("cached_tokens"),
        "tokens_per_s": facts.get("tokens_per_s"),
        "outcome": end.note if end is not None else "",
        "error": masker.text(end.error) if end is not None else "",
        # As the store tells them (store._ended): a 4xx the proxy gave itself, no target asked.
        "refused": end is not None and not end.target and 400 <= end.status < 500,
        "body_state": _body_state(exchange),
        "websocket": _websocket(exchange),
        # What the recording of answers did (engine/recall.py): "hit" (answered from it),
        # "miss" (not in it: sent and recorded), "record", "offline-miss", "bypass", "unkept" (sent
        # to be recorded, its answer not kept); "" when not used.
        "cache": end.cache if end is not None else "",
        # "unkept": why the answer was not recorded ("the tool hung up before the answer's end").
        "cache_note": end.cache_note if end is not None else "",
    }


def answer_json(read: ReadAnswer | None, masker: Masker) -> dict[str, Any] | None:
    """The reassembled answer as the page shows it (None when there is none to read)."""
    if read is None:
        return None
    answer = read.answer
    return {
        "api": read.api,
        "streamed": read.streamed,
        "text": masker.text(answer.text),
        "thinking": masker.text(answer.thinking),
        "tool_calls": [
            {"id": call.id, "name": masker.text(call.name), "arguments": masker.text(call.arguments)}
            for call in answer.tool_calls
        ],
        "finish_reason": answer.finish_reason,
        "usage": _masked_json(answer.usage, masker),
        "error": _masked_json(answer.error, masker),
        "done": answer.done,
        "cut": read.cut,
        "note": read.problem,
    }


def iso_time(epoch_s: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(at: float | None, since: float) -> float | None:
    return None if at is None else round((at - since) * 1000, 1)


def _bytes_up(exchange: Exchange) -> int | None:
    if exchange.head.websocket:
        return exchange.ws_bytes_up
    for name, value in exchange.head.raw_headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    if exchange.request_body is not None and not exchange.request_body_cut:
        return len(exchange.request_body)
    return None


def _body_state(exchange: Exchange) -> str:
    if exchange.evicted:
        return "evicted"
    if exchange.body_cut or exchange.request_body_cut:
        return "cut"
    if exchange.chunks or exchange.request_body is not None:
        return "kept"
    if exchange.response_bytes or _bytes_up(exchange):
        return "off"
    return "none"


def _websocket(exchange: Exchange) -> dict[str, Any] | None:
    if not exchange.head.websocket:
        return None
    tally = exchange.end.websocket if exchange.end is not None else None
    return {
        "messages_up": tally.messages_up if tally else exchange.ws_messages_up,
        "messages_down": tally.messages_down if tally else exchange.ws_messages_down,
        "bytes_up": tally.bytes_up if tally else exchange.ws_bytes_up,
        "bytes_down": tally.bytes_down if tally else exchange.ws_bytes_down,
        "close_code": tally.close_code if tally else None,
        "closed_by": tally.closed_by if tally else "",
    }


def _request_body(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    body = exchange.request_body
    text = _masked_utf8(body, masker)
    state = "evicted" if exchange.evicted else "cut" if exchange.request_body_cut else "kept"
    if body is None and not exchange.evicted:
        state = "off" if _bytes_up(exchange) else "none"
    return {"text": text, "json": _json_or_none(text), "cut": exchange.request_body_cut, "state": state}


def _response_body(exchange: Exchange, masker: Masker) -> dict[str, Any]:
    """The body as the client got it, its Content-Encoding undone where the standard library
    can; the proxy's own answer (an error's JSON) when it gave one."""
    own = exchange.end.own_body if exchange.end is not None else None
    body, problem, state = None, "", "none"
    if exchange.evicted:
        state = "evicted"
    elif exchange.chunks:
        (body, problem), state = decoded_body(exchange), "cut" if exchange.body_cut else "kept"
    elif own:
        body, state = own, "kept"
    elif exchange.response_bytes:
        state = "off"
    return {
        "text": _masked_utf8(body, masker),
        "cut": exchange.body_cut,
        "state": state,
        "encoding": response_header(exchange, "Content-Encoding"),
        "note": problem,
    }


def _masked_utf8(body: bytes | None, masker: Masker) -> str | None:
    if body is None:
        return None
    try:
        return masker.text(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _json_or_none(text: str | None) -> Any:
    """``text`` (masked already) parsed as JSON, or None. Deep nesting (a request of 3,000
    brackets raised RecursionError: a 500 for the detail and every export) and NaN or Infinity
    (which the page's JSON.parse refuses) read as no JSON: the body is still shown as text."""
    if not text:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a browser reads")


def _masked_json(value: Any, masker: Masker) -> Any:
    """A JSON value (usage, an error object) with every credential in it masked."""
    if value is None:
        return None
    text = masker.text(json.dumps(value, ensure_ascii=False))
    try:
        return json.loads(text)
    except ValueError:
        return text
