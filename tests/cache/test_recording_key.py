"""The key: the same request finds its answer however its JSON is spelt; anything that changes
the answer misses; credentials are never part of it."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from desktop.cache.key import (
    base_key,
    canonical_body,
    matches_vary,
    query_without_credentials,
    request_headers,
    vary_names,
    vary_of,
)

BODY = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "user", "content": "h\u00e9llo"}],
    "n": 1.5,
}


def key_of(body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = (), **fields: str) -> str:
    ask = {"target": "openai", "method": "POST", "path": "/v1/chat/completions", "query": ""} | fields
    return base_key(ask["target"], ask["method"], ask["path"], ask["query"], body, request_headers(headers))


def spelt(value: Any, chance: random.Random) -> str:
    """``value`` as JSON with its keys shuffled and random whitespace."""
    space = lambda: chance.choice(["", " ", "\n", "\t ", "  "])  # noqa: E731
    if isinstance(value, dict):
        items = list(value.items())
        chance.shuffle(items)
        inner = ",".join(f"{space()}{json.dumps(k)}{space()}:{space()}{spelt(v, chance)}" for k, v in items)
        return "{" + inner + space() + "}"
    if isinstance(value, list):
        return "[" + ",".join(space() + spelt(v, chance) for v in value) + "]"
    return json.dumps(value, ensure_ascii=chance.random() < 0.5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(json_values, st.integers(0, 2**32))
def test_key_order_whitespace_and_escapes_do_not_change_the_key(value: Any, seed: int) -> None:
    chance = random.Random(seed)
    one = spelt(value, chance).encode()
    other = spelt(value, chance).encode()
    assert key_of(one) == key_of(other)
    assert canonical_body(one) == canonical_body(other)


def test_what_changes_the_answer_changes_the_key() -> None:
    body = json.dumps(BODY).encode()
    same = key_of(body, ((b"Accept", b"text/event-stream"),))
    assert key_of(json.dumps(BODY, indent=2).encode(), ((b"accept", b"text/event-stream"),)) == same
    differs = [
        key_of(json.dumps(BODY | {"model": "gpt-4o"}).encode(), ((b"Accept", b"text/event-stream"),)),
        key_of(json.dumps(BODY | {"n": 2}).encode(), ((b"Accept", b"text/event-stream"),)),
        key_of(body, ((b"Accept", b"application/json"),)),
        key_of(body, ((b"Accept", b"text/event-stream"), (b"Accept-Encoding", b"gzip"))),
        key_of(body, ((b"Accept", b"text/event-stream"), (b"anthropic-version", b"2023-06-01"))),
        key_of(body, ((b"Accept", b"text/event-stream"), (b"anthropic-beta", b"tools-2024"))),
        key_of(body, ((b"Accept", b"text/event-stream"), (b"OpenAI-Beta", b"assistants=v2"))),
        key_of(body, ((b"Accept", b"text/event-stream"),), target="anthropic"),
        key_of(body, ((b"Accept", b"text/event-stream"),), path="/v1/completions"),
        key_of(body, ((b"Accept", b"text/event-stream"),), method="PUT"),
        key_of(body, ((b"Accept", b"text/event-stream"),), query="api-version=2024-10-21"),
    ]
    assert same not in differs
    assert len(set(differs)) == len(differs)


def test_credentials_and_other_headers_never_change_the_key() -> None:
    body = json.dumps(BODY).encode()
    plain = key_of(body)
    assert key_of(body, ((b"Authorization", b"Bearer sk-one"), (b"x-api-key", b"sk-ant-two"))) == plain
    assert key_of(body, ((b"User-Agent", b"OpenAI/Python 1.50"), (b"X-Stainless-Retry-Count", b"1"))) == plain
    assert key_of(body, query="key=AIzaOne") == plain
    assert key_of(body, query="api_key=one&access_token=two") == plain
    assert key_of(body, query="alt=sse&key=AIzaOne") == key_of(body, query="alt=sse&key=AIzaTwo")
    assert (
        query_without_credentials("alt=sse&key=k&token[]=t&creds%5Bsecret%5D=s&page_token=p")
        == "alt=sse&page_token=p"
    )
    assert key_of(body, query="after=x&api-key=one&q=sk-proj-abcdefghijklmnop1234") == key_of(body, query="after=x")


def test_the_openai_organization_and_project_change_the_key() -> None:
    body = json.dumps(BODY).encode()
    one = key_of(body, ((b"OpenAI-Organization", b"org-a"),))
    assert one != key_of(body, ((b"OpenAI-Organization", b"org-b"),))
    assert one != key_of(body)
    assert key_of(body, ((b"OpenAI-Project", b"proj_a"),)) != key_of(body, ((b"OpenAI-Project", b"proj_b"),))


def test_parameters_that_choose_a_page_change_the_key() -> None:
    """Names ending in token or key that are no credential (attacker trial: every page of a
    listing got the first page's answer)."""
    body = b""
    for name in ("next_token", "continuation_token", "sort_key", "partition_key", "pageToken"):
        assert key_of(body, query=f"{name}=page2") != key_of(body, query=f"{name}=page3"), name
    # ...while every name the log takes for a credential, but those, is still left out.
    for name in ("api_token", "user_key", "x-functions-key", "code", "accesstoken", "hf_token", "key"):
        assert query_without_credentials(f"a=1&{name}=value") == "a=1", name


def test_a_body_that_is_not_json_is_keyed_by_its_bytes() -> None:
    assert canonical_body(b"") == ""
    assert canonical_body(b"\xff\xfe binary").startswith("sha256:")
    assert canonical_body(b"not json") != canonical_body(b"not json ")
    assert key_of(b"a=1&b=2") != key_of(b"b=2&a=1")
    assert canonical_body(b"[" * 100_000 + b"]" * 100_000).startswith("sha256:")  # too deep to parse


def test_vary_names_what_the_answer_depends_on_but_never_a_credential() -> None:
    assert vary_names([("Vary", "Origin, Accept-Encoding"), ("vary", "X-Tenant, Authorization, Cookie")]) == (
        "origin",
        "x-tenant",
    )
    assert vary_names([("Vary", "Origin, *")]) is None
    assert vary_names([("Content-Type", "application/json")]) == ()
    headers = request_headers(
        ((b"X-Tenant", b"blue"), (b"x-tenant", b"green"), (b"Authorization", b"Bearer k"))
    )
    vary = vary_of(("x-tenant", "origin"), headers)
    assert vary == (("origin", None), ("x-tenant", "blue, green"))
    assert matches_vary(vary, headers)
    assert not matches_vary(vary, request_headers(((b"X-Tenant", b"blue"),)))
    assert not matches_vary(vary, request_headers(((b"X-Tenant", b"blue, green"), (b"Origin", b"x"))))


def test_the_order_of_different_headers_and_how_a_number_is_written_do_not_change_the_key() -> None:
    """The openai SDK sends accept-encoding before accept; curl and httpx the other way round:
    the same request either way. A whole number is the same number as 1 or 1.0."""
    body = json.dumps(BODY).encode()
    sdk_order = ((b"accept-encoding", b"gzip"), (b"Accept", b"application/json"))
    curl_order = ((b"Accept", b"application/json"), (b"Accept-Encoding", b"gzip"))
    assert key_of(body, sdk_order) == key_of(body, curl_order)
    betas = ((b"anthropic-beta", b"one"), (b"anthropic-beta", b"two"))
    assert key_of(body, betas) != key_of(body, betas[::-1])  # one name's values keep their order
    assert key_of(b'{"temperature": 1}') == key_of(b'{"temperature": 1.0}') == key_of(b'{"temperature": 1e0}')
    assert key_of(b'{"temperature": 1}') != key_of(b'{"temperature": 1.5}')
