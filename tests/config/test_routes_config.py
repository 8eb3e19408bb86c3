"""Routes and failover in the config file (issue 14): what a person writes in [targets.NAME]
(prefix, models, model_map, fallbacks) and [failover], as `config check` and every load see it.

What a person would notice: each mistake in a route is pointed at where it is written (the
list element, the model_map name, the fallback), with the same rules the proxy routes by, so a
file `config check` passes is one the proxy can route; a good file keeps its claims as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import tomlkit
from background import BackgroundServer, wait_until
from cli_process import run_cli
from hypothesis import given
from hypothesis import strategies as st
from test_follow import counting_command
from upstreams import Seen, echo_app

from desktop.config.follow import KeyReader, Overrides, Plan, follow, plan_for, read_config
from desktop.config.model import Failover, Routing
from desktop.config.parse import ConfigError, parse_config
from desktop.config.store import load_config
from desktop.controller import ConfigBinding, ProxyController

# Every kind of route mistake, each on a line of its own or beside others on one line, in a
# list spread over lines, an inline table and a model_map table of its own.
ROUTE_MISTAKES = """\
active = "openai"

[failover]
retry_after_max = 61
cooldown = nan

[targets.openai]
url = "https://api.openai.com"
models = ["gpt-*", "o[0-9"]
prefix = ["/openai", "openai", 3]

[targets.anthropic]
url = "https://api.anthropic.com"
prefix = "/openai/v1"
models = [
  "claude-*",  # the Anthropic models
  "gpt-*",
]
fallbacks = ["openroute", "anthropic",
   "openrouter", "openrouter"]

[targets.openrouter]
url = "https://openrouter.ai/api"
prefix = '/__trayproxy/x'
model_map = { "" = "x", "gpt-4.1" = 3, gpt-4.1 = "y" }

[targets.gateway]
url = "https://gw.example"
fallbacks = ["zzzzzzzzzz"]

[targets.gateway.model_map]
"claude-sonnet-4-5" = "anthropic/claude-sonnet-4.5"
"o3" = ""
"""
EXPECTED = [
    "4:1: 'failover.retry_after_max' must be a number of seconds from 0 to 60, not 61",
    "5:1: 'failover.cooldown' must be a number of seconds from 0 to 86400, not nan",
    "9:20: target 'openai': model glob 'o[0-9' has a '[' without its ']'",
    "10:22: target 'openai': prefix 'openai' must start with '/'",
    "10:32: 'targets.openai.prefix' must hold strings only, not a whole number",
    "14:10: target 'anthropic': prefix '/openai/v1' overlaps prefix '/openai' of target 'openai'",
    "17:3: target 'anthropic': model glob 'gpt-*' is claimed by both target 'openai' and target 'anthropic'",
    "19:14: target 'anthropic': fallback 'openroute' is not a target; did you mean 'openrouter'?",
    "19:27: target 'anthropic': fallback 'anthropic' is this target itself",
    "20:18: target 'anthropic': fallback 'openrouter' is named twice",
    "24:10: target 'openrouter': prefix '/__trayproxy/x' is the proxy's own (/__trayproxy cannot be claimed)",
    "25:15: target 'openrouter': model_map names must not be empty",
    "25:25: 'targets.openrouter.model_map': the name sent for 'gpt-4.1' must be a string, not a whole number",
    "25:40: 'targets.openrouter.model_map': 'gpt-4' is a table, not a model name; a name with a dot needs"
    ' quotes, as in "gpt-4.1" = "openai/gpt-4.1"',
    "29:14: target 'gateway': fallback 'zzzzzzzzzz' is not a target; the targets are openai, anthropic,"
    " openrouter, gateway",
    "33:1: target 'gateway': model_map names must not be empty",
]

GOOD_ROUTES = """\
active = "openai"

[failover]
retry_after_max = 0.5
cooldown = 0

[targets.openai]
url = "https://api.openai.com"
models = ["gpt-*", "o[0-9]*"]
fallbacks = ["gateway"]

[targets.anthropic]
url = "https://api.anthropic.com"
prefix = "/anthropic"
models = ["claude-*"]

[targets.gateway]
url = "https://gw.example/openai"
prefix = ["/gw", "/gateway"]
model_map = { "gpt-4o" = "openai/gpt-4o", "o3" = "openai/o3" }
fallbacks = ["openai"]
"""


def test_config_check_points_at_each_route_mistake_where_it_is_written(tmp_path: Path) -> None:
    """`trayproxy config check` lists every route mistake at the line and column of the item
    itself: the list element (in a one-line list, a list spread over lines, a lone string), the
    model_map name (inline or in a table of its own), the fallback, with "did you mean"."""
    path = tmp_path / "config.toml"
    path.write_text(ROUTE_MISTAKES, encoding="utf-8")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"{path}:{line}" for line in EXPECTED]


def test_every_load_refuses_the_same_route_mistakes_at_the_same_places(tmp_path: Path) -> None:
    """What the running proxy reads on each save (load_config) is refused for the very same
    reasons at the very same places, so the last good file stays in use and the tray says where."""
    path = tmp_path / "config.toml"
    path.write_text(ROUTE_MISTAKES, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert [problem.format(str(path)) for problem in refused.value.problems] == [
        f"{path}:{line}" for line in EXPECTED
    ]


def test_a_file_with_good_routes_passes_and_keeps_its_claims_as_written(tmp_path: Path) -> None:
    """Routes as the README writes them pass `config check`; each target keeps its claims as
    written (a lone prefix a list of one), and [failover] its two waits."""
    path = tmp_path / "config.toml"
    path.write_text(GOOD_ROUTES, encoding="utf-8")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK, 3 target(s), active: openai\n"

    config = parse_config(GOOD_ROUTES)
    openai, anthropic, gateway = config.targets.values()
    assert (openai.models, openai.fallbacks, openai.prefixes) == (("gpt-*", "o[0-9]*"), ("gateway",), ())
    assert anthropic.prefixes == ("/anthropic",)
    assert gateway.prefixes == ("/gw", "/gateway")
    assert dict(gateway.model_map) == {"gpt-4o": "openai/gpt-4o", "o3": "openai/o3"}
    assert config.failover == Failover(retry_after_max_s=0.5, cooldown_s=0.0)
    assert parse_config('[targets.a]\nurl = "http://x"\n').failover == Failover(
        retry_after_max_s=2.0, cooldown_s=30.0
    )


def test_a_fallback_naming_a_target_with_a_mistake_of_its_own_is_not_called_unknown() -> None:
    """A fallback whose target has a mistake (no url) gets that one problem, where it is, not a
    second "not a target" where it is named."""
    with pytest.raises(ConfigError) as refused:
        parse_config('[targets.a]\nurl = "http://x"\nfallbacks = ["b"]\n[targets.b]\nprefix = "/b"\n')
    assert [problem.format("c") for problem in refused.value.problems] == ["c:4:1: target 'b' has no url"]


# What a person might write in a route setting: names, globs, paths, and values of other types.
_ROUTE_TEXT = st.text(alphabet=st.sampled_from("/ab*?[]!-_.é\"'\\# \t"), max_size=8)
_ROUTE_VALUE = st.one_of(
    _ROUTE_TEXT,
    st.integers(),
    st.booleans(),
    st.lists(st.one_of(_ROUTE_TEXT, st.integers(), st.lists(_ROUTE_TEXT, max_size=2)), max_size=4),
    st.dictionaries(_ROUTE_TEXT, st.one_of(_ROUTE_TEXT, st.integers()), max_size=3),
)


@given(
    st.dictionaries(
        st.sampled_from(["a", "b"]),
        st.dictionaries(st.sampled_from(["prefix", "models", "model_map", "fallbacks"]), _ROUTE_VALUE),
        min_size=1,
    )
)
def test_any_routes_give_a_config_or_a_config_error(claims: dict[str, dict[str, object]]) -> None:
    """Whatever the route settings hold, the app gets a config or a ConfigError it can show,
    each problem at a line of the file, never a crash."""
    text = tomlkit.dumps(
        {"targets": {name: {"url": "http://127.0.0.1:9", **table} for name, table in claims.items()}}
    )
    try:
        parse_config(text)
    except ConfigError as exc:
        problems = [(problem.line, problem.col) for problem in exc.problems]
    else:
        return
    lines = text.count("\n") + 1
    assert problems
    assert all(1 <= line <= lines and col >= 1 for line, col in problems), text


def test_a_line_separator_in_a_comment_does_not_move_later_mistakes_down() -> None:
    """A comment may hold U+2028 (valid TOML, one line for an editor); the mistake after it is
    still named at its own line (it was named one line too far down)."""
    with pytest.raises(ConfigError) as refused:
        parse_config('# a\u2028b\n[targets.a]\nurl = "http://127.0.0.1:9"\nport = "x"\n')
    assert [(problem.line, problem.col) for problem in refused.value.problems] == [(4, 1)]


def test_editing_a_targets_routes_does_not_run_its_key_command_again(tmp_path: Path) -> None:
    """A save that changes only a target's prefix, models, model_map or fallbacks reads no key
    again (a key command may unlock a password manager or open an SSO page); a change to what
    the key is for (its URL) does."""
    command, counter = counting_command(tmp_path)
    target = (
        f'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nkey = {{ command = \'{command}\' }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    path = tmp_path / "config.toml"
    path.write_text(target, encoding="utf-8")
    keys = KeyReader()
    plan = plan_for(read_config(path, Overrides()), path, Overrides(), keys)
    assert counter.read_text() == "1"
    path.write_text(
        target + 'prefix = "/a"\nmodels = ["a-*"]\nmodel_map = { m = "n" }\nfallbacks = ["b"]\n'
        '[targets.b]\nurl = "http://127.0.0.1:10"\n',
        encoding="utf-8",
    )
    plan, _ = follow(path, Overrides(), keys, plan)
    assert plan.config_error is None
    assert plan.config is not None
    assert plan.config.targets["a"].prefixes == ("/a",)
    assert counter.read_text() == "1"
    assert [value.reveal() for _, value in plan.target.add_headers] == ["Bearer key-1"]
    path.write_text(target.replace(":9", ":11"), encoding="utf-8")
    plan, _ = follow(path, Overrides(), keys, plan)
    assert counter.read_text() == "2"


def _plan(tmp_path: Path, text: str, *, chosen: str | None = None) -> Plan:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return plan_for(
        read_config(path, Overrides(), chosen=chosen), path, Overrides(), KeyReader(), chosen=chosen
    )


def _where(routing: Routing | None, path: str, body: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Each target a request would be tried at, first to last, with the path and model it is sent."""
    assert routing is not None
    raw_path, _, query = path.partition("?")
    held = json.dumps(body).encode() if body is not None else None
    return [
        (route.target, route.path + (f" {route.send_model or route.model}" if route.model else ""))
        for route in routing.table.attempts(raw_path, query, held, upgrade=False)
    ]


def test_the_main_port_routes_by_every_claim_and_reaches_only_what_the_routes_name(tmp_path: Path) -> None:
    """With `ollama` chosen: gpt-* goes to openai (then its fallback gateway, which renames the
    model), /anthropic/... to anthropic without the prefix, everything else (GET /v1/models) to
    ollama. The routing carries exactly the targets a request can reach, each with its key; the
    fallback of a fallback and a target nothing routes to are left out, and their key commands
    never run; [failover] gives the waits."""
    command, counter = counting_command(tmp_path)
    (tmp_path / "gw").mkdir()
    gateway_command, gateway_runs = counting_command(tmp_path / "gw")
    plan = _plan(
        tmp_path,
        'active = "ollama"\n[failover]\nretry_after_max = 1.5\ncooldown = 12\n'
        '[targets.ollama]\nurl = "http://127.0.0.1:11434"\n'
        '[targets.openai]\nurl = "https://api.openai.com"\nmodels = ["gpt-*", "o[0-9]*"]\nfallbacks = ["gateway"]\n'
        '[targets.anthropic]\nurl = "https://api.anthropic.com"\nprefix = "/anthropic"\nmodels = ["claude-*"]\n'
        f"[targets.gateway]\nurl = \"https://gw.example/openai\"\nkey = {{ command = '{gateway_command}' }}\n"
        'headers = { Authorization = "Bearer {key}" }\n'
        'model_map = { "gpt-4o" = "openai/gpt-4o" }\nfallbacks = ["backup"]\n'
        f"[targets.backup]\nurl = \"https://backup.example\"\nkey = {{ command = '{command}' }}\n"
        'headers = { Authorization = "Bearer {key}" }\n'
        f"[targets.unused]\nurl = \"https://unused.example\"\nkey = {{ command = '{command}' }}\n"
        'headers = { Authorization = "Bearer {key}" }\n',
    )
    routing = plan.main.routing
    assert routing is not None
    assert plan.target.name == "ollama"
    assert [target.name for target in routing.targets] == ["openai", "anthropic", "gateway"]
    gateway = routing.targets[2]
    assert [(name, value.reveal()) for name, value in gateway.add_headers] == [
        ("Authorization", "Bearer key-1")
    ]
    assert gateway.url == "https://gw.example/openai"
    assert (routing.retry_after_max_s, routing.cooldown_s) == (1.5, 12.0)
    assert _where(routing, "/v1/chat/completions", {"model": "gpt-4o"}) == [
        ("openai", "/v1/chat/completions gpt-4o"),
        ("gateway", "/v1/chat/completions openai/gpt-4o"),
    ]
    assert _where(routing, "/v1/chat/completions", {"model": "o3-mini"})[0] == (
        "openai",
        "/v1/chat/completions o3-mini",
    )
    assert _where(routing, "/anthropic/v1/messages?beta=true") == [("anthropic", "/v1/messages?beta=true")]
    assert _where(routing, "/v1/messages", {"model": "claude-sonnet-4-5"}) == [
        ("anthropic", "/v1/messages claude-sonnet-4-5")
    ]
    assert _where(routing, "/v1/models") == [("ollama", "/v1/models")]
    assert counter.read_text() == "0"
    assert gateway_runs.read_text() == "1"
    assert plan.key_problems == {}


def test_choosing_another_target_makes_it_the_default_and_a_file_without_routes_has_none(
    tmp_path: Path,
) -> None:
    """The chosen target is the main port's default route, whatever claims it has; a file with
    no route claims plans exactly as before routes existed (no routing on any port), and a chosen
    target with only fallbacks gets routing for them."""
    text = (
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nport = 8001\n'
        '[targets.b]\nurl = "http://127.0.0.1:10"\nfallbacks = ["a"]\n'
    )
    plain = _plan(tmp_path, text)
    assert [listener.routing for listener in plain.listeners] == [None, None]

    with_fallback = _plan(tmp_path, text, chosen="b")
    assert with_fallback.target.name == "b"
    assert with_fallback.own_ports[0].routing is None
    assert _where(with_fallback.main.routing, "/v1/models") == [("b", "/v1/models"), ("a", "/v1/models")]

    routed = _plan(tmp_path, text + 'models = ["b-*"]\n', chosen="a")
    assert routed.main.routing is not None
    assert [target.name for target in routed.main.routing.targets] == ["b"]
    assert _where(routed.main.routing, "/v1/models") == [("a", "/v1/models")]
    assert _where(routed.main.routing, "/v1/x", {"model": "b-1"}) == [("b", "/v1/x b-1"), ("a", "/v1/x")]


def test_a_targets_own_port_keeps_only_its_model_map_and_fallbacks(tmp_path: Path) -> None:
    """A target on a port of its own serves only itself there: another target's model globs and
    its own prefix do not apply, its model_map and its fallbacks (each renaming for itself) do;
    a target on its own port with neither has no routing there."""
    plan = _plan(
        tmp_path,
        'active = "plain"\n'
        '[targets.plain]\nurl = "http://127.0.0.1:9"\nport = 8002\n'
        '[targets.gw]\nurl = "http://127.0.0.1:10"\nport = 8001\nprefix = "/gw"\n'
        'model_map = { "m" = "gw/m" }\nfallbacks = ["backup"]\n'
        '[targets.backup]\nurl = "http://127.0.0.1:11"\nmodel_map = { "m" = "backup/m" }\n'
        '[targets.claimer]\nurl = "http://127.0.0.1:12"\nmodels = ["m*"]\n',
    )
    gw = plan.own("gw")
    assert gw is not None
    assert gw.routing is not None
    assert [target.name for target in gw.routing.targets] == ["backup"]
    assert _where(gw.routing, "/gw/v1/chat", {"model": "m"}) == [
        ("gw", "/gw/v1/chat gw/m"),
        ("backup", "/gw/v1/chat backup/m"),
    ]
    plain = plan.own("plain")
    assert plain is not None
    assert plain.routing is None
    assert plan.main.routing is not None
    assert _where(plan.main.routing, "/v1/chat", {"model": "m"}) == [("claimer", "/v1/chat m")]
    assert _where(plan.main.routing, "/gw/v1/chat", {"model": "m"}) == [
        ("gw", "/v1/chat gw/m"),
        ("backup", "/v1/chat backup/m"),
    ]


def test_a_failing_key_command_runs_once_per_plan_for_a_target_both_routed_and_on_its_own_port(
    tmp_path: Path,
) -> None:
    """A target reached by a route and served on a port of its own has its key read once for
    the plan, not once per port: a failing command (an SSO page, a locked password manager) is
    not run twice in a row."""
    counter = tmp_path / "runs.txt"
    counter.write_text("0")
    script = tmp_path / "fail.py"
    script.write_text(
        "import pathlib, sys\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        "sys.exit(1)\n"
    )
    plan = _plan(
        tmp_path,
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n'
        f'[targets.b]\nurl = "http://127.0.0.1:10"\nport = 8001\nprefix = "/b"\n'
        f'key = {{ command = \'"{sys.executable}" "{script}"\' }}\nheaders = {{ Authorization = "Bearer {{key}}" }}\n',
    )
    assert counter.read_text() == "1"
    assert "b" in plan.key_problems


def test_a_target_only_a_route_reaches_has_its_ca_bundle_checked_before_use(tmp_path: Path) -> None:
    """A CA bundle the engine could not load is refused at its line when a route reaches the
    target (as for the chosen target), and left alone when nothing does."""
    path = tmp_path / "config.toml"
    text = (
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n'
        f'[targets.b]\nurl = "https://127.0.0.1:10"\nca_bundle = "{tmp_path / "missing.pem"}"\n'
    )
    path.write_text(text, encoding="utf-8")
    assert read_config(path, Overrides()).active == "a"
    path.write_text(text + 'prefix = "/b"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        read_config(path, Overrides())
    assert [(problem.line, problem.col) for problem in refused.value.problems] == [(6, 1)]


def test_a_bad_routes_edit_keeps_the_last_good_routes_and_says_where(tmp_path: Path) -> None:
    """A save with a route mistake (a misspelt fallback) leaves the plan that was running, routes
    and all, with the file, line and column and the "did you mean"; the fixed save applies."""
    path = tmp_path / "config.toml"
    good_text = (
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nfallbacks = ["backup"]\n'
        '[targets.backup]\nurl = "http://127.0.0.1:10"\n'
    )
    path.write_text(good_text, encoding="utf-8")
    keys = KeyReader()
    good = plan_for(read_config(path, Overrides()), path, Overrides(), keys)
    path.write_text(
        good_text.replace('["backup"]', '["backup", "bakup"]') + 'prefix = "/b"\n', encoding="utf-8"
    )
    kept, _ = follow(path, Overrides(), keys, good)
    assert kept.listeners == good.listeners
    assert (
        kept.config_error
        == f"{path}:4:24: target 'a': fallback 'bakup' is not a target; did you mean 'backup'?"
    )
    path.write_text(good_text + 'prefix = "/b"\n', encoding="utf-8")
    fixed, _ = follow(path, Overrides(), keys, kept)
    assert fixed.config_error is None
    assert _where(fixed.main.routing, "/b/x") == [("backup", "/x")]


# The watcher looks at the file once a second; a reload on a loaded machine fits well inside this.
FOLLOW_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 10.0


def test_while_serving_a_bad_routes_edit_keeps_the_running_routes_and_a_fixed_one_applies(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    """Through the real proxy: /b/... goes to target b without the prefix, the rest to a. A save
    whose prefix overlaps b's is pointed at (file:line:col) while /b/... keeps reaching b; the
    fixed save moves b to /bee at once."""
    seen_a, seen_b = Seen(), Seen()
    with BackgroundServer(echo_app(seen_a)) as a, BackgroundServer(echo_app(seen_b)) as b:
        path = tmp_path / "config.toml"
        head = f'active = "a"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n[targets.a]\nurl = "{a.url}"\n'
        path.write_text(f'{head}[targets.b]\nurl = "{b.url}"\nprefix = "/b"\n', encoding="utf-8")
        controller = ProxyController.from_config(ConfigBinding(path))
        follow.append(controller)
        controller.start()
        url = controller.status.local_url
        assert url is not None
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
            assert client.get("/b/v1/models").status_code == 200
            assert client.get("/v1/models").status_code == 200

            path.write_text(
                f'{head}prefix = "/b/x"\n[targets.b]\nurl = "{b.url}"\nprefix = "/b"\n', encoding="utf-8"
            )
            assert wait_until(lambda: controller.status.config_error is not None, timeout_s=FOLLOW_TIMEOUT_S)
            assert controller.status.config_error == (
                f"{path}:10:10: target 'b': prefix '/b' overlaps prefix '/b/x' of target 'a'"
            )
            assert client.get("/b/x/kept").status_code == 200

            path.write_text(f'{head}[targets.b]\nurl = "{b.url}"\nprefix = "/bee"\n', encoding="utf-8")
            assert wait_until(lambda: controller.status.config_error is None, timeout_s=FOLLOW_TIMEOUT_S)
            assert client.get("/bee/moved").status_code == 200
            assert client.get("/b/now-a").status_code == 200
    assert [request["raw_path"] for request in seen_b.requests] == ["/v1/models", "/x/kept", "/moved"]
    assert [request["raw_path"] for request in seen_a.requests] == ["/v1/models", "/b/now-a"]


def test_config_show_prints_the_claims_as_written_and_ends_with_where_requests_go(tmp_path: Path) -> None:
    """`trayproxy config show` keeps every claim as written (a model named like a credential
    included) and, for a bug report, ends with comment lines saying where requests go, in the
    order they are tried; the key stays masked."""
    path = tmp_path / "config.toml"
    text = GOOD_ROUTES.replace(
        'model_map = { "gpt-4o" = "openai/gpt-4o", "o3" = "openai/o3" }',
        'model_map = { "gpt-4o" = "openai/gpt-4o", "secret-model" = "vendor/secret-model" }\n'
        'key = "sk-routecfg-canary-0123456789abcdef"\nheaders = { Authorization = "Bearer {key}" }',
    )
    path.write_text(text, encoding="utf-8")
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert "sk-routecfg-canary" not in shown
    body, _, summary = shown.partition("\n# Where requests go")
    assert body == text.replace("sk-routecfg-canary-0123456789abcdef", "***")
    assert summary.splitlines()[1:] == [
        "#   /anthropic/... -> anthropic (sent without /anthropic)",
        "#   /gw/... -> gateway (sent without /gw), then openai",
        "#   /gateway/... -> gateway (sent without /gateway), then openai",
        "#   model gpt-* or o[0-9]* -> openai, then gateway",
        "#   model claude-* -> anthropic",
        "#   anything else -> openai (active), then gateway",
        "#   gateway is sent model gpt-4o as openai/gpt-4o",
        "#   gateway is sent model secret-model as vendor/secret-model",
    ]


def test_the_first_run_file_offers_routes_that_work_once_uncommented(tmp_path: Path) -> None:
    """The first-run file has no routes (one port, one target at a time, as before) and shows
    the Anthropic route as comments; uncommented, `config check` passes it and the main port
    sends /anthropic/... and claude-* models to anthropic while openai stays the default."""
    from desktop.config.store import DEFAULT_CONFIG

    assert all(listener.routing is None for listener in _plan(tmp_path, DEFAULT_CONFIG).listeners)
    lines = ['# prefix = "/anthropic"', '# models = ["claude-*"]']
    assert all(DEFAULT_CONFIG.count(line + "\n") == 1 for line in lines)
    text = DEFAULT_CONFIG
    for line in lines:
        text = text.replace(line + "\n", line.removeprefix("# ") + "\n")
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    routing = _plan(tmp_path, text).main.routing
    assert _where(routing, "/anthropic/v1/messages") == [("anthropic", "/v1/messages")]
    assert _where(routing, "/v1/messages", {"model": "claude-haiku-4-5"}) == [
        ("anthropic", "/v1/messages claude-haiku-4-5")
    ]
    assert _where(routing, "/v1/models") == [("openai", "/v1/models")]


def test_a_key_pasted_where_a_name_goes_is_masked_in_the_message_that_quotes_it(tmp_path: Path) -> None:
    """A key pasted as a fallback, a prefix or ``active`` is quoted by the message that says it
    is not a target: config check, the log and the tray's notification show it masked."""
    key = "sk-or-v1-0123456789abcdefGATEWAYSECRET"
    groq, bare = "gsk_" + "Zq3v8mKx0fP1s9TbW2nYcR7uLd4hGe6A", "0f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e"
    path = tmp_path / "config.toml"
    path.write_text(
        f'active = "{key}"\n'
        '[targets.openai]\nurl = "http://127.0.0.1:1"\n'
        f'fallbacks = ["{key}", "{groq}", "{bare}"]\nprefix = "{key}"\n'
    )
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1
    for pasted in (key, groq, bare):
        assert pasted not in result.stdout + result.stderr
    assert "is not a target" in result.stderr
    assert result.stderr.count(f"{path}:") >= 3, result.stderr


def test_a_key_header_given_on_the_command_line_goes_only_to_the_chosen_target(tmp_path: Path) -> None:
    """``serve --header 'Authorization: Bearer ...'`` is for the target the main port serves:
    a target a route or a fallback reaches is another service and never gets it; a header
    without a key still goes everywhere."""
    from desktop.config.model import Secret

    path = tmp_path / "config.toml"
    path.write_text(
        'active = "openai"\n'
        '[targets.openai]\nurl = "http://127.0.0.1:1"\nfallbacks = ["gateway"]\n'
        '[targets.anthropic]\nurl = "http://127.0.0.1:2"\nprefix = "/anthropic"\n'
        '[targets.gateway]\nurl = "http://127.0.0.1:3"\n'
    )
    overrides = Overrides(
        headers=(
            ("Authorization", Secret("Bearer sk-flag")),
            ("Ocp-Apim-Subscription-Key", Secret("abc")),
            ("X-Gateway-Auth", Secret("0f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e")),
            ("X-Trace", Secret("on")),
        )
    )
    plan = plan_for(read_config(path, overrides), path, overrides, KeyReader())
    assert plan.main.routing is not None
    headers = {
        target.name: dict((name, value.reveal()) for name, value in target.add_headers)
        for target in (plan.target, *plan.main.routing.targets)
    }
    assert headers == {
        "openai": {
            "Authorization": "Bearer sk-flag",
            "Ocp-Apim-Subscription-Key": "abc",
            "X-Gateway-Auth": "0f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e",
            "X-Trace": "on",
        },
        "anthropic": {"X-Trace": "on"},
        "gateway": {"X-Trace": "on"},
    }


def test_config_show_says_why_it_cannot_tell_where_requests_go(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('active = "a"\n[targets.a]\nurl = "http://127.0.0.1:1"\nfallbacks = ["nope"]\n')
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 0
    assert result.stdout.rstrip().endswith(
        "# Where requests go is not shown: this file has mistakes ('trayproxy config check' lists them)."
    )


def test_config_check_warns_of_a_fallback_made_for_another_api(tmp_path: Path) -> None:
    """anthropic (x-api-key) falling back to a gateway that takes Authorization: a 529 would
    become the gateway's 404 for the Anthropic SDK. Not an error (a gateway may speak both)."""
    path = tmp_path / "config.toml"
    path.write_text(
        'active = "anthropic"\n'
        '[targets.anthropic]\nurl = "http://127.0.0.1:1"\nheaders = { x-api-key = "k-1" }\nfallbacks = ["gateway"]\n'
        '[targets.gateway]\nurl = "http://127.0.0.1:2"\nheaders = { Authorization = "Bearer k-2" }\n'
    )
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        "warning: target 'anthropic' falls back to 'gateway', which takes its key in Authorization,"
        " not x-api-key" in result.stderr
    )
