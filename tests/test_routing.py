"""The routing decision (issue 14): which target a request goes to and what it is sent as.

Pure tables, no sockets: ``RouteTable.route`` is given what the service knows of a request (its
raw path, query, held body, whether it asks for an upgrade) and says where it goes.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from desktop.engine.addresses import RESERVED_PREFIX
from desktop.routing import (
    MAX_MODEL_BODY_BYTES,
    RESERVED_PATH,
    Route,
    RouteTable,
    TargetClaims,
    claim_problems,
)

TABLE = RouteTable.build(
    [
        TargetClaims("main"),
        TargetClaims("anthropic", prefixes=("/anthropic",), models=("claude-*",)),
        TargetClaims(
            "openai",
            prefixes=("/openai/v1", "/defm"),
            models=("gpt-*", "o[0-9]*"),
            model_map={"gpt-4o": "openai/gpt-4o"},
            fallbacks=("main",),
        ),
        TargetClaims("gemini", models=("gemini-*",), model_map={"gemini-pro": "gemini-2.5-pro"}),
        TargetClaims("azure", models=("azure-*",), model_map={"azure-gpt": "prod-gpt"}),
    ],
    default="main",
)


def body(**members: object) -> bytes:
    return json.dumps(members).encode()


@pytest.mark.parametrize(
    ("raw_path", "query", "target", "path", "chosen_by"),
    [
        ("/anthropic/v1/messages", "", "anthropic", "/v1/messages", "prefix:/anthropic"),
        ("/anthropic", "", "anthropic", "/", "prefix:/anthropic"),
        ("/anthropic/", "", "anthropic", "/", "prefix:/anthropic"),
        ("/anthropic", "x=1", "anthropic", "/?x=1", "prefix:/anthropic"),
        (
            "/anthropic/v1/models",
            "limit=5&a=%2F",
            "anthropic",
            "/v1/models?limit=5&a=%2F",
            "prefix:/anthropic",
        ),
        # Whole segments only: a longer first segment is another path.
        ("/anthropical/v1/messages", "", "main", "/anthropical/v1/messages", "default"),
        ("/anthropic-x", "", "main", "/anthropic-x", "default"),
        # Raw: percent-encoding is not decoded, neither to match nor in what is sent.
        ("/anthrop%69c/v1", "", "main", "/anthrop%69c/v1", "default"),
        ("/anthropic/a%2Fb/..%2F", "", "anthropic", "/a%2Fb/..%2F", "prefix:/anthropic"),
        ("/anthropic//v1", "", "anthropic", "//v1", "prefix:/anthropic"),
        # A multi-segment prefix and several prefixes at once.
        ("/openai/v1/chat/completions", "", "openai", "/chat/completions", "prefix:/openai/v1"),
        ("/openai/v2/chat/completions", "", "main", "/openai/v2/chat/completions", "default"),
        ("/defm/v1/models", "", "openai", "/v1/models", "prefix:/defm"),
        ("/v1/models", "", "main", "/v1/models", "default"),
        ("/", "", "main", "/", "default"),
        # Case matters, as in the path the target sees.
        ("/Anthropic/v1", "", "main", "/Anthropic/v1", "default"),
    ],
)
def test_a_prefix_matches_whole_raw_segments_and_is_stripped(
    raw_path: str, query: str, target: str, path: str, chosen_by: str
) -> None:
    route = TABLE.route(raw_path, query, None, upgrade=False)
    assert (route.target, route.path, route.chosen_by) == (target, path, chosen_by)


@pytest.mark.parametrize(
    ("raw_path", "query", "held", "upgrade", "target", "chosen_by", "model"),
    [
        (
            "/v1/messages",
            "",
            body(model="claude-sonnet-4-5", max_tokens=5),
            False,
            "anthropic",
            "model:claude-*",
            "claude-sonnet-4-5",
        ),
        (
            "/v1/chat/completions",
            "",
            body(model="gpt-4.1-mini"),
            False,
            "openai",
            "model:gpt-*",
            "gpt-4.1-mini",
        ),
        ("/v1/responses", "", body(model="o3"), False, "openai", "model:o[0-9]*", "o3"),
        # Globs are case-sensitive and whole-name.
        ("/v1/chat/completions", "", body(model="GPT-4"), False, "main", "default", "GPT-4"),
        ("/v1/chat/completions", "", body(model="my-gpt-4"), False, "main", "default", "my-gpt-4"),
        ("/v1/responses", "", body(model="ox"), False, "main", "default", "ox"),
        # Gemini names the model in the path; the body has none.
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "",
            body(contents=[]),
            False,
            "gemini",
            "model:gemini-*",
            "gemini-2.0-flash",
        ),
        (
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "alt=sse",
            None,
            False,
            "gemini",
            "model:gemini-*",
            "gemini-2.0-flash",
        ),
        (
            "/v1beta/models/gemini-2.0-flash:countTokens",
            "",
            None,
            False,
            "gemini",
            "model:gemini-*",
            "gemini-2.0-flash",
        ),
        ("/v1beta/models/gemini-2.0-flash", "", None, False, "main", "default", None),
        # Azure names the deployment in the path, whatever the body says.
        (
            "/openai/deployments/azure-gpt/chat/completions",
            "api-version=2024-10-21",
            body(model="gpt-4o"),
            False,
            "azure",
            "model:azure-*",
            "azure-gpt",
        ),
        # OpenAI Realtime: ?model= on a WebSocket upgrade, and only there.
        (
            "/v1/realtime",
            "model=gpt-4o-realtime-preview",
            None,
            True,
            "openai",
            "model:gpt-*",
            "gpt-4o-realtime-preview",
        ),
        ("/v1/realtime", "model=gpt-4o-realtime-preview", None, False, "main", "default", None),
        ("/v1/realtime", "x=1&model=claude-x", None, True, "anthropic", "model:claude-*", "claude-x"),
        # No body, as for GET /v1/models: the default.
        ("/v1/models", "", None, False, "main", "default", None),
    ],
)
def test_the_model_is_read_where_each_api_puts_it(
    raw_path: str,
    query: str,
    held: bytes | None,
    upgrade: bool,
    target: str,
    chosen_by: str,
    model: str | None,
) -> None:
    route = TABLE.route(raw_path, query, held, upgrade=upgrade)
    assert (route.target, route.chosen_by, route.model) == (target, chosen_by, model)


@pytest.mark.parametrize(
    ("raw_path", "held", "target", "chosen_by"),
    [
        # A prefix wins over the model the body names.
        ("/anthropic/v1/messages", body(model="gpt-4o"), "anthropic", "prefix:/anthropic"),
        ("/defm/v1/messages", body(model="claude-opus-4"), "openai", "prefix:/defm"),
        # Then the model, then the default.
        ("/v1/messages", body(model="claude-opus-4"), "anthropic", "model:claude-*"),
        ("/v1/messages", body(model="llama-3"), "main", "default"),
    ],
)
def test_prefix_comes_before_model_before_default(
    raw_path: str, held: bytes, target: str, chosen_by: str
) -> None:
    route = TABLE.route(raw_path, "", held, upgrade=False)
    assert (route.target, route.chosen_by) == (target, chosen_by)


def test_of_two_matching_globs_the_first_declared_wins() -> None:
    table = RouteTable.build(
        [TargetClaims("a", models=("claude-3*",)), TargetClaims("b", models=("claude-*",))], default="a"
    )
    assert table.route("/v1/messages", "", body(model="claude-3-haiku"), upgrade=False).target == "a"
    assert table.route("/v1/messages", "", body(model="claude-4"), upgrade=False).target == "b"


@pytest.mark.parametrize(
    "held",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"claude-x"',
        b'{"model": 5}',
        b'{"model": null}',
        b'{"model": ["claude-x"]}',
        b'{"messages": [{"model": "claude-x"}]}',  # not top-level
        b'{"model": "claude-x"',  # cut short
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,  # deeper than the decoder's recursion limit
        b'{"model": "claude-x", "pad": "' + b"x" * MAX_MODEL_BODY_BYTES + b'"}',  # over 1 MiB: not held
    ],
    ids=lambda held: repr(held[:24]),
)
def test_a_body_without_a_readable_model_goes_to_the_default_unchanged(held: bytes) -> None:
    route = TABLE.route("/v1/messages", "", held, upgrade=False)
    assert route == Route("main", "/v1/messages", "default")


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        # Everything but the value stays as sent: spacing, order, escapes, non-ASCII, numbers.
        (
            b'{ "messages" : [{"role":"user","content":"h\\u00e9 \xc3\xa9"}],\n  "model":"gpt-4o" , "temperature":1.50}',
            b'{ "messages" : [{"role":"user","content":"h\\u00e9 \xc3\xa9"}],\n  "model":"openai/gpt-4o" , "temperature":1.50}',
        ),
        (b'{"model":"gpt-4o"}', b'{"model":"openai/gpt-4o"}'),
        (b'\n{"model":"gpt-\\u0034o","stream":true}\n', b'\n{"model":"openai/gpt-4o","stream":true}\n'),
        # Duplicate names: json keeps the last, which routes it; servers differ on which they
        # read, so every one is renamed.
        (b'{"model":"gpt-x","model":"gpt-4o"}', b'{"model":"openai/gpt-4o","model":"openai/gpt-4o"}'),
        # A nested "model" is left alone.
        (
            b'{"tools":[{"model":"gpt-4o"}],"model":"gpt-4o"}',
            b'{"tools":[{"model":"gpt-4o"}],"model":"openai/gpt-4o"}',
        ),
    ],
)
def test_model_map_renames_only_the_top_level_model(held: bytes, expected: bytes) -> None:
    route = TABLE.route("/v1/chat/completions", "", held, upgrade=False)
    assert (route.target, route.model, route.send_model) == ("openai", "gpt-4o", "openai/gpt-4o")
    assert route.body == expected
    assert json.loads(route.body) == {**json.loads(held), "model": "openai/gpt-4o"}


@pytest.mark.parametrize(
    "held",
    [
        '{"model": "gpt-4o", "x": 0.10000000000000000555}'.encode("utf-16"),
        '{"model": "gpt-4o", "x": "\\ud800"}'.encode("utf-16"),
    ],
)
def test_a_body_the_rename_cannot_keep_faithful_is_routed_but_sent_as_it_is(held: bytes) -> None:
    """Re-encoding UTF-16 or a BOM body would round its numbers or send an encoding its
    Content-Type does not name: it goes to the target the model picks, unrenamed, and a lone
    surrogate never makes the request fail."""
    route = TABLE.route("/v1/chat/completions", "", held, upgrade=False)
    assert (route.target, route.send_model, route.body) == ("openai", None, None)


def test_a_name_not_in_the_map_is_sent_as_it_is() -> None:
    route = TABLE.route("/v1/chat/completions", "", body(model="gpt-4.1"), upgrade=False)
    assert (route.target, route.model, route.send_model, route.body) == ("openai", "gpt-4.1", None, None)


@pytest.mark.parametrize(
    ("raw_path", "query", "upgrade", "path"),
    [
        (
            "/v1beta/models/gemini-pro:generateContent",
            "",
            False,
            "/v1beta/models/gemini-2.5-pro:generateContent",
        ),
        (
            "/openai/deployments/azure-gpt/chat/completions",
            "api-version=1",
            False,
            "/openai/deployments/prod-gpt/chat/completions?api-version=1",
        ),
        ("/v1/realtime", "model=gpt-4o&x=%2F", True, "/v1/realtime?model=openai%2Fgpt-4o&x=%2F"),
    ],
)
def test_a_model_outside_the_body_is_renamed_where_it_was_read(
    raw_path: str, query: str, upgrade: bool, path: str
) -> None:
    route = TABLE.route(raw_path, query, None, upgrade=upgrade)
    assert route.path == path
    assert route.body is None


def test_a_prefix_route_renames_for_its_target_too() -> None:
    """model_map belongs to the target: a request that reached it by prefix is renamed as well."""
    route = TABLE.route("/defm/v1/chat/completions", "", body(model="gpt-4o"), upgrade=False)
    assert (route.target, route.path, route.send_model) == ("openai", "/v1/chat/completions", "openai/gpt-4o")
    assert route.body == body(model="openai/gpt-4o")
    assert route.fallbacks == ("main",)


def test_with_no_model_claims_the_body_is_never_parsed() -> None:
    """A config without model routes pays nothing for them: not even an invalid body is looked at."""

    class Untouchable(bytes):
        def __getattribute__(self, name: str) -> object:
            raise AssertionError(f"body read: {name}")

    table = RouteTable.build([TargetClaims("main"), TargetClaims("b", prefixes=("/b",))], default="main")
    assert not table.reads_models
    route = table.route("/v1/messages", "", Untouchable(b'{"model":"x"}'), upgrade=False)
    assert route == Route("main", "/v1/messages", "default")


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ([TargetClaims("a", prefixes=("anthropic",))], ["must start with '/'"]),
        ([TargetClaims("a", prefixes=("/anthropic/",))], ["must not end with '/'"]),
        ([TargetClaims("a", prefixes=("/",))], ["must not end with '/'"]),
        ([TargetClaims("a", prefixes=("/a//b",))], ["whole path segments"]),
        ([TargetClaims("a", prefixes=("/a/../b",))], ["whole path segments"]),
        ([TargetClaims("a", prefixes=("/a?x",))], ["'?'"]),
        ([TargetClaims("a", prefixes=("/__trayproxy",))], ["/__trayproxy cannot be claimed"]),
        ([TargetClaims("a", prefixes=("/__trayproxy/x",))], ["/__trayproxy cannot be claimed"]),
        (
            [TargetClaims("a", prefixes=("/openai",)), TargetClaims("b", prefixes=("/openai/v1",))],
            ["'/openai/v1'", "'b'", "'/openai'", "'a'"],
        ),
        (
            [TargetClaims("a", prefixes=("/x",)), TargetClaims("b", prefixes=("/x",))],
            ["'/x'", "'a'", "'b'"],
        ),
        (
            [TargetClaims("a", models=("claude-*",)), TargetClaims("b", models=("claude-*",))],
            ["'claude-*'", "'a'", "'b'"],
        ),
        ([TargetClaims("a", models=("",))], ["non-empty"]),
        ([TargetClaims("a", models=("o[0-9*",))], ["'['"]),
        ([TargetClaims("a", fallbacks=("nowhere",))], ["'nowhere' is not a target", "the targets are a"]),
        (
            [TargetClaims("a"), TargetClaims("openrouter", fallbacks=("openroter",))],
            ["did you mean 'openrouter'"],
        ),
        ([TargetClaims("a", fallbacks=("a",))], ["this target itself"]),
        ([TargetClaims("a", fallbacks=("b", "b")), TargetClaims("b")], ["'b' is named twice"]),
        ([TargetClaims("a"), TargetClaims("a")], ["listed twice"]),
        ([TargetClaims("b")], ["default target 'a'"]),
    ],
)
def test_a_table_that_cannot_work_is_refused_with_both_sides_named(
    claims: list[TargetClaims], words: list[str]
) -> None:
    with pytest.raises(ValueError, match=re.escape(words[0])) as refused:
        RouteTable.build(claims, default="a")
    for word in words[1:]:
        assert word in str(refused.value)


def test_prefixes_that_only_share_characters_do_not_overlap() -> None:
    table = RouteTable.build(
        [TargetClaims("a", prefixes=("/openai",)), TargetClaims("b", prefixes=("/openai2", "/__trayproxyx"))],
        default="a",
    )
    assert table.route("/openai2/v1", "", None, upgrade=False).target == "b"


def test_the_reserved_path_is_the_proxys_own() -> None:
    assert RESERVED_PATH + "/" == RESERVED_PREFIX


def test_every_problem_of_a_table_is_listed_with_where_it_is_written() -> None:
    """config check shows all of them at once, each at its line: the list says which target,
    which key and which item."""
    problems = claim_problems(
        [
            TargetClaims("a", prefixes=("/x", "y"), models=("gpt-*",), fallbacks=("c", "zz")),
            TargetClaims("b", prefixes=("/x/v1",), models=("gpt-*",), model_map={"": "m"}),
            TargetClaims("c"),
        ]
    )
    assert [(p.target, p.key, p.item) for p in problems] == [
        ("a", "prefix", 1),
        ("a", "fallbacks", 1),
        ("b", "prefix", 0),
        ("b", "models", 0),
        ("b", "model_map", ""),
    ]
    assert "overlaps prefix '/x' of target 'a'" in problems[2].message
    assert claim_problems([TargetClaims("a", prefixes=("/a",), models=("a-*",)), TargetClaims("b")]) == []


PLAIN = RouteTable.build(
    [
        TargetClaims("main", model_map={}),
        TargetClaims("anthropic", prefixes=("/anthropic",)),
        TargetClaims("openai", prefixes=("/openai/v1",)),
    ],
    default="main",
)


@given(
    raw_path=st.text(min_size=1).map(lambda text: "/" + text.lstrip("/")),
    query=st.text(),
    held=st.none() | st.binary(),
    upgrade=st.booleans(),
)
def test_without_a_claimed_prefix_or_model_claims_everything_goes_to_the_default_unchanged(
    raw_path: str, query: str, held: bytes | None, upgrade: bool
) -> None:
    """No claim matches: the request is sent on as it came, path, query and body alike."""
    assume(not any(raw_path == p or raw_path.startswith(p + "/") for p in ("/anthropic", "/openai/v1")))
    route = PLAIN.route(raw_path, query, held, upgrade=upgrade)
    expected_path = f"{raw_path}?{query}" if query else raw_path
    assert route == Route("main", expected_path, "default")


def test_failover_tries_the_route_then_each_fallback_each_renamed_for_itself() -> None:
    table = RouteTable.build(
        [
            TargetClaims("main"),
            TargetClaims(
                "anthropic",
                prefixes=("/anthropic",),
                models=("claude-*",),
                model_map={"claude-x": "claude-x-latest"},
                fallbacks=("openrouter", "main"),
            ),
            TargetClaims("openrouter", model_map={"claude-x": "anthropic/claude-x"}),
        ],
        default="main",
    )
    body = json.dumps({"model": "claude-x", "stream": True}).encode()
    routes = table.attempts("/v1/messages", "", body, upgrade=False)
    assert [(r.target, r.path, r.chosen_by, r.send_model) for r in routes] == [
        ("anthropic", "/v1/messages", "model:claude-*", "claude-x-latest"),
        ("openrouter", "/v1/messages", "model:claude-*", "anthropic/claude-x"),
        ("main", "/v1/messages", "model:claude-*", None),
    ]
    assert json.loads(routes[1].body or b"")["model"] == "anthropic/claude-x"
    assert routes[2].body is None  # sent as the client wrote it
    prefixed = table.attempts("/anthropic/v1/models", "limit=5", None, upgrade=False)
    assert [(r.target, r.path) for r in prefixed] == [
        ("anthropic", "/v1/models?limit=5"),
        ("openrouter", "/v1/models?limit=5"),
        ("main", "/v1/models?limit=5"),
    ]
    assert [r.target for r in table.attempts("/v1/models", "", None, upgrade=False)] == ["main"]


def test_a_query_model_is_renamed_where_it_was_read_even_percent_encoded() -> None:
    """``mod%65l=`` is read as ``model`` (as a server decodes it), so it is the one renamed."""
    table = RouteTable.build(
        [TargetClaims("main"), TargetClaims("rt", models=("gpt-rt*",), model_map={"gpt-rt": "gpt-realtime"})],
        default="main",
    )
    route = table.route("/v1/realtime", "mod%65l=gpt-rt&x=1", None, upgrade=True)
    assert (route.target, route.path) == ("rt", "/v1/realtime?model=gpt-realtime&x=1")


def test_a_glob_an_earlier_one_of_another_target_takes_whole_is_refused() -> None:
    """gpt-4o after openai's gpt-* could never match: config check says so and what to do."""
    problems = claim_problems(
        [
            TargetClaims("openai", models=("gpt-*", "o[0-9]*")),
            TargetClaims("gateway", models=("gpt-4o", "o3-mini", "llama-*")),
            TargetClaims("more", models=("gpt-4o*",)),
        ]
    )
    assert [(p.target, p.item) for p in problems] == [("gateway", 0), ("gateway", 1), ("more", 0)]
    assert "'gpt-4o' never matches: 'gpt-*' of target 'openai' is declared first" in problems[0].message
    assert "put [targets.gateway] before [targets.openai]" in problems[0].message
    # The same target repeating itself narrower is redundant, not wrong; a later broader glob is
    # fine, and so is a glob that only looks covered (gpt-3.5 reaches "gpt-*" here).
    assert (
        claim_problems([TargetClaims("a", models=("gpt-[!3]*",)), TargetClaims("b", models=("gpt-*", "o?"))])
        == []
    )
    assert (
        claim_problems([TargetClaims("a", models=("*-[0-9]*",)), TargetClaims("b", models=("o[0-9]*",))])
        == []
    )
    assert (
        claim_problems([TargetClaims("a", models=("gpt-*", "gpt-4o")), TargetClaims("b", models=("*",))])
        == []
    )


def test_a_name_renamed_in_the_path_is_percent_encoded_as_in_the_query() -> None:
    table = RouteTable.build(
        [
            TargetClaims("main"),
            TargetClaims("gw", models=("gemini-*",), model_map={"gemini-pro": "google/gemini pro"}),
        ],
        default="main",
    )
    route = table.route("/v1beta/models/gemini-pro:generateContent", "alt=sse", None, upgrade=False)
    assert route.path == "/v1beta/models/google%2Fgemini%20pro:generateContent?alt=sse"


def test_a_body_with_a_utf8_byte_order_mark_is_renamed_and_keeps_it() -> None:
    held = b'\xef\xbb\xbf{"model": "gpt-4o", "n": 1e400}'
    route = TABLE.route("/v1/chat/completions", "", held, upgrade=False)
    assert route.body == b'\xef\xbb\xbf{"model": "openai/gpt-4o", "n": 1e400}'
