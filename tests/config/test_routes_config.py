"""Routes and failover in the config file (issue 14): what a person writes in [targets.NAME]
(prefix, models, model_map, fallbacks) and [failover], as `config check` and every load see it.

What a person would notice: each mistake in a route is pointed at where it is written (the
list element, the model_map name, the fallback), with the same rules the proxy routes by, so a
file `config check` passes is one the proxy can route; a good file keeps its claims as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit
from cli_process import run_cli
from hypothesis import given
from hypothesis import strategies as st
from test_follow import counting_command

from desktop.config.follow import KeyReader, Overrides, follow, plan_for, read_config
from desktop.config.model import Failover
from desktop.config.parse import ConfigError, parse_config
from desktop.config.store import load_config

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
    assert [problem.format(str(path)) for problem in refused.value.problems] == [f"{path}:{line}" for line in EXPECTED]


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
    assert parse_config('[targets.a]\nurl = "http://x"\n').failover == Failover(retry_after_max_s=2.0, cooldown_s=30.0)


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
    text = tomlkit.dumps({"targets": {name: {"url": "http://127.0.0.1:9", **table} for name, table in claims.items()}})
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
        f"active = \"a\"\n[targets.a]\nurl = \"http://127.0.0.1:9\"\nkey = {{ command = '{command}' }}\n"
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
