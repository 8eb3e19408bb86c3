"""Exchanges as an HTTP Archive (HAR 1.2), for browser DevTools and HTTP debuggers.

Each entry is a request as the client sent it to TrayProxy (``http://127.0.0.1:PORT/path``)
and the answer it got, with every key masked as the page masks it (views.py). HAR's
``timings``: ``wait`` is the time to the target's response head (TTFB), ``receive`` the rest;
``send`` is 0 (the proxy times a request from its arrival). A response body that is not UTF-8
is given in base64, as the format allows (``content.encoding``); one decoded from gzip or
deflate is given decoded, as browsers export it. TrayProxy's own fields start with ``_``, as
the format asks of custom fields: ``_attempts`` (each target tried, with its answer), ``_answer``
(the reassembled answer) and ``_trayproxy`` (route, target, tokens, time to first token...).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from desktop import __version__
from desktop.inspector.encoding import decoded_body, response_header
from desktop.inspector.masking import Masker
from desktop.inspector.store import Exchange
from desktop.inspector.views import detail_json

__all__ = ["HAR_HEAD", "HAR_TAIL", "har_bytes", "har_entry", "har_entry_bytes", "har_json"]

# The row's fields kept under _trayproxy (the rest are HAR's own fields, or bodies).
_FACTS = (
    "id",
    "port",
    "kind",
    "state",
    "route",
    "target",
    "ttfb_ms",
    "ttft_ms",
    "duration_ms",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "tokens_per_s",
    "outcome",
    "error",
    "refused",
    "body_state",
    "websocket",
    "chunk_gaps_ms",
    "cache",
    "cache_note",
)


# A HAR file is HAR_HEAD, its entries (har_entry_bytes) separated by commas, and HAR_TAIL: so
# it can be written entry by entry, never whole in memory.
HAR_HEAD = (
    '{"log":{"version":"1.2","creator":'
    + json.dumps({"name": "TrayProxy", "version": __version__}, ensure_ascii=False, separators=(",", ":"))
    + ',"entries":['
).encode()
HAR_TAIL = b"]}}\n"


def har_bytes(exchanges: Iterable[Exchange]) -> bytes:
    """The HAR file of ``exchanges``, in the order given (oldest first, as HAR lists them)."""
    return HAR_HEAD + b",".join(har_entry_bytes(exchange) for exchange in exchanges) + HAR_TAIL


def har_entry_bytes(exchange: Exchange) -> bytes:
    """One entry of the file, as JSON (compact: an export can hold the whole body ring)."""
    return json.dumps(har_entry(exchange), ensure_ascii=False, separators=(",", ":")).encode()


def har_json(exchanges: Iterable[Exchange]) -> dict[str, Any]:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "TrayProxy", "version": __version__},
            "entries": [har_entry(exchange) for exchange in exchanges],
        }
    }


def har_entry(exchange: Exchange) -> dict[str, Any]:
    detail = detail_json(exchange)
    duration = detail["duration_ms"] or 0.0
    wait = min(detail["ttfb_ms"] if detail["ttfb_ms"] is not None else duration, duration)
    request_body = detail["request_body"]
    request: dict[str, Any] = {
        "method": detail["method"],
        "url": f"http://127.0.0.1:{detail['port']}{detail['path']}",
        "httpVersion": exchange.head.version,
        "cookies": [],
        "headers": _pairs(detail["request_headers"]),
        "queryString": _pairs(parse_qsl(detail["path"].partition("?")[2], keep_blank_values=True)),
        "headersSize": -1,
        "bodySize": detail["bytes_up"] if detail["bytes_up"] is not None else -1,
    }
    if request_body["text"] is not None:
        request["postData"] = {
            "mimeType": _header(detail["request_headers"], "content-type"),
            "text": request_body["text"],
        }
    return {
        "startedDateTime": detail["time"],
        "time": duration,
        "request": request,
        "response": {
            "status": detail["status"] or 0,
            "statusText": exchange.reason,
            "httpVersion": exchange.head.version,
            "cookies": [],
            "headers": _pairs(detail["response_headers"]),
            "content": _content(exchange, detail),
            "redirectURL": _header(detail["response_headers"], "location"),
            "headersSize": -1,
            "bodySize": detail["bytes_down"] if detail["state"] == "done" else -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": wait, "receive": round(duration - wait, 1)},
        "_attempts": detail["attempts"],
        "_answer": detail["answer"],
        "_trayproxy": {name: detail[name] for name in _FACTS},
    }


def _content(exchange: Exchange, detail: dict[str, Any]) -> dict[str, Any]:
    body = detail["response_body"]
    content: dict[str, Any] = {
        "size": exchange.response_bytes,
        "mimeType": response_header(exchange, "Content-Type") or "x-unknown",
    }
    if body["text"] is not None:
        content["text"] = body["text"]
        content["size"] = len(body["text"].encode())
    elif exchange.chunks:
        # Not UTF-8: its bytes in base64, masked as the text would be (byte for byte as
        # Latin-1, so the masking sees every ASCII key and keeps the other bytes).
        data, _ = decoded_body(exchange)
        masked = Masker(exchange.head, exchange.request_body).text(data.decode("latin-1")).encode("latin-1")
        content.update(size=len(masked), text=base64.b64encode(masked).decode(), encoding="base64")
    if body["note"] or body["state"] not in ("kept", "none"):
        content["comment"] = body["note"] or f"body {body['state']}"
    return content


def _pairs(pairs: Iterable[Any]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def _header(pairs: list[list[str]], name: str) -> str:
    return next((value for key, value in pairs if key.lower() == name), "")
