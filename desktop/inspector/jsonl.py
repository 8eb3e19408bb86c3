"""Exchanges as JSON Lines: one object a line, for jq, pandas and scripts.

A line is the list row (views.row_json: time, method, path, route, target, attempts, status,
outcome, TTFB, TTFT, duration, model, tokens...) plus what the model answered: ``text``,
``thinking``, ``tool_calls`` ([{id, name, arguments}]), ``finish_reason`` and ``api`` (all
empty or null when no answer was read: bodies off, evicted, no API known). Every key masked as
the page masks it; no request body (a HAR export has it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from desktop.inspector.masking import Masker
from desktop.inspector.readback import answer_of
from desktop.inspector.store import Exchange
from desktop.inspector.views import answer_json, row_json

__all__ = ["jsonl_bytes", "jsonl_line", "jsonl_record"]


def jsonl_bytes(exchanges: Iterable[Exchange]) -> bytes:
    """One line per exchange, in the order given."""
    return b"".join(jsonl_line(exchange) for exchange in exchanges)


def jsonl_line(exchange: Exchange) -> bytes:
    """One exchange's line, its line end included."""
    return (json.dumps(jsonl_record(exchange), ensure_ascii=False) + "\n").encode()


def jsonl_record(exchange: Exchange) -> dict[str, Any]:
    answer = answer_json(answer_of(exchange), Masker(exchange.head, exchange.request_body)) or {}
    return {
        **row_json(exchange),
        "api": answer.get("api") or (exchange.facts or {}).get("api"),
        "text": answer.get("text", ""),
        "thinking": answer.get("thinking", ""),
        "tool_calls": answer.get("tool_calls", []),
        "finish_reason": answer.get("finish_reason"),
    }
