"""Bodies a hostile or odd client sends are shown, exported and copied without harm (issue 15's
attack trial): a deeply nested body, NaN and Infinity, credentials inside the body.

Before: 3,000 nested brackets made the detail and every export answer 500 with a traceback in
the log; `1e999` put `Infinity` in the detail, which the page cannot parse; `"api_key": ...`
in a JSON body and `api_key=...` in a form body showed in the detail, the HAR and the cURL.
"""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from desktop.engine.capture import ExchangeEnd, RequestHead
from desktop.inspector import har, jsonl, views
from desktop.inspector.readback import facts_of
from desktop.inspector.store import Exchange

SECRET = "BODYFIELDSECRET123"


def exchange_with(body: bytes, content_type: str = "application/json") -> Exchange:
    headers = ((b"Host", b"127.0.0.1:8000"), (b"Content-Type", content_type.encode()))
    head = RequestHead("POST", "/v1/chat/completions", "HTTP/1.1", headers, 8000, False, 0.0)
    exchange = Exchange.of(id=7, wall_started=0.0, head=head, request_body=body)
    exchange.status, exchange.response_headers, exchange.response_at = 200, CIMultiDict(), 0.01
    exchange.chunks, exchange.chunk_times, exchange.response_bytes = [body], [0.02], len(body)
    exchange.end = ExchangeEnd(200, "", "", "openai", "", (), len(body), None, None, 0.1)
    return exchange


def shown(exchange: Exchange) -> str:
    """Everything a person can see or take of the exchange, as text."""
    detail = json.dumps(views.detail_json(exchange), allow_nan=False)
    return detail + har.har_bytes([exchange]).decode() + jsonl.jsonl_bytes([exchange]).decode()


def test_a_deeply_nested_body_is_shown_as_text() -> None:
    exchange = exchange_with(b"[" * 3000 + b"]" * 3000)
    facts_of(exchange)  # no RecursionError on the loop either
    detail = views.detail_json(exchange)
    assert detail["request_body"]["json"] is None
    assert detail["request_body"]["text"].startswith("[[[")
    assert shown(exchange)


def test_nan_and_infinity_stay_text_a_browser_can_parse() -> None:
    exchange = exchange_with(b'{"model": "m", "temperature": 1e999, "top_p": NaN}')
    detail = views.detail_json(exchange)
    assert detail["request_body"]["json"] is None
    json.dumps(detail, allow_nan=False)  # no Infinity or NaN for JSON.parse to refuse


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            json.dumps({"model": "m", "auth": {"api_key": SECRET}, "password": "PWSECRET456"}).encode(),
            "application/json",
        ),
        (f"model=m&api_key={SECRET}&password=PWSECRET456".encode(), "application/x-www-form-urlencoded"),
    ],
    ids=["json", "form"],
)
def test_credentials_inside_a_body_are_masked_everywhere_it_shows(body: bytes, content_type: str) -> None:
    exchange = exchange_with(body, content_type)
    text = shown(exchange) + views.detail_json(exchange)["curl"]
    assert SECRET not in text
    assert "PWSECRET456" not in text
    assert "model" in text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"api_key": "' + SECRET.encode() + b'", "d": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            "application/json",
        ),
        (
            b'{"api_key": "' + SECRET.encode() + b'", "api_key": "second-' + SECRET.encode() + b'"}',
            "application/json",
        ),
        (b'{"api_key": "' + SECRET.encode() + b'", "x": ', "application/json"),
        (
            b'--b\r\nContent-Disposition: form-data; name="api_key"\r\n\r\n'
            + SECRET.encode()
            + b"\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        (
            b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'", "api_key": "' + SECRET.encode() + b'"}',
            "application/json",
        ),
    ],
    ids=["with-deep-nesting", "duplicated", "truncated", "multipart", "over-1-mib"],
)
def test_credentials_in_bodies_no_parser_reads_are_masked_too(body: bytes, content_type: str) -> None:
    """The second cold trial's bodies: each showed the key in the detail, cURL or HAR."""
    exchange = exchange_with(body, content_type)
    assert SECRET not in shown(exchange) + views.detail_json(exchange)["curl"]
