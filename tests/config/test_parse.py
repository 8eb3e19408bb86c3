"""Config text -> model: valid files parse; every mistake is reported with file:line:col."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desktop.config.parse import ConfigError, parse_config

GOOD = """\
# My targets
active = "ollama"

[listen]
port = 8001

[security]
allowed_origins = ["https://app.example"]

[targets.openai]
url = "https://api.openai.com"
key = { env = "OPENAI_API_KEY" }
headers = { Authorization = "Bearer {key}" }

[targets.ollama]
url = "http://127.0.0.1:11434"
read_timeout = 1200
"""


def test_valid_file_parses_into_targets_and_settings() -> None:
    """A hand-written file with two targets gives both, the active one, and the listen port."""
    config = parse_config(GOOD)
    assert config.active == "ollama"
    assert list(config.targets) == ["openai", "ollama"]
    assert config.targets["openai"].key_source == ("env", "OPENAI_API_KEY")
    assert config.targets["openai"].headers == (("Authorization", "Bearer {key}"),)
    assert config.targets["ollama"].read_timeout_s == 1200.0
    assert config.settings.port == 8001
    assert "https://app.example" in config.settings.allowed_origins
    assert "http://localhost:*" in config.settings.allowed_origins


def test_keep_headers_reach_the_engines_target_in_lower_case() -> None:
    """``keep_headers`` is read in any case and carried to the target the engine is given."""
    from desktop.config.keys import resolve_target

    config = parse_config(
        '[targets.gw]\nurl = "https://gw.example"\nkey = "k"\n'
        'headers = { Authorization = "Bearer {key}" }\nkeep_headers = ["X-Api-Key", "api-key"]\n'
    )
    assert config.targets["gw"].keep_headers == frozenset({"x-api-key", "api-key"})
    assert resolve_target(config.targets["gw"]).target.keep_headers == frozenset({"x-api-key", "api-key"})


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="/home/me/.config/TrayProxy/config.toml")
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'active = "a"\n[targets.a]\nurl = "http://x"\nport = \n',
            "config.toml:4:8: not valid TOML",
            id="bad-toml",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nread_timout = 5\n',
            "config.toml:3:1: unknown setting 'targets.a.read_timout' (did you mean 'read_timeout'?)",
            id="typo",
        ),
        pytest.param(
            '[listen]\nport = "8000"\n[targets.a]\nurl = "http://x"\n',
            "config.toml:2:1: 'listen.port' must be a whole number, not a string",
            id="wrong-type",
        ),
        pytest.param(
            '[listen]\nport = true\n[targets.a]\nurl = "http://x"\n',
            "config.toml:2:1: 'listen.port' must be a whole number, not true or false",
            id="bool-is-not-int",
        ),
        pytest.param(
            '[targets.a]\nurl = "api.openai.com"\n',
            "config.toml:2:1: 'api.openai.com' is not an http:// or https:// URL with a host",
            id="url-without-scheme",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\n[targets.a]\nurl = "http://y"\n',
            "config.toml:3:",
            id="duplicate-target",
        ),
        pytest.param(
            'active = "opneai"\n[targets.openai]\nurl = "http://x"\n',
            "config.toml:1:1: active target 'opneai' does not exist (did you mean 'openai'?)",
            id="active-missing",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nheaders = { Authorization = "Bearer {key}" }\n',
            "config.toml:3:1: target 'a' uses {key} in a header but has no key source",
            id="key-needed",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nkey = { envv = "K" }\n',
            "config.toml:3:1: unknown key source 'envv' (did you mean 'env'?)",
            id="key-source-typo",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nkeep_headers = "authorization"\n',
            "config.toml:3:1: 'targets.a.keep_headers' must be a list, not a string",
            id="keep-headers-not-a-list",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nkey = "k"\nheaders = { x-api-key = "{key}" }\n'
            'keep_headers = ["Authorisation"]\n',
            "config.toml:5:1: keep_headers: 'Authorisation' is not a credential header (did you mean "
            "'authorization'?); other headers pass anyway",
            id="keep-headers-typo",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nkeep_headers = ["X-Team"]\n',
            "config.toml:3:1: keep_headers: 'X-Team' is not a credential header (one of api-key, "
            "authorization, x-api-key, x-goog-api-key); other headers pass anyway",
            id="keep-headers-not-a-credential",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nkey = "k"\nheaders = { x-api-key = "{key}" }\n'
            'keep_headers = ["x-api-key"]\n',
            "config.toml:5:1: keep_headers: target 'a' sets 'x-api-key' itself, so a tool's cannot be kept",
            id="keep-headers-set-by-target",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nstrip_headers = ["api-key"]\nkeep_headers = ["api-key"]\n',
            "config.toml:4:1: keep_headers: 'api-key' is in strip_headers too; keep it in one of them",
            id="keep-headers-also-stripped",
        ),
        pytest.param("[listen]\nport = 8000\n", "config.toml:1:1: no targets", id="no-targets"),
    ],
)
def test_mistakes_are_reported_with_file_line_and_column(text: str, expected: str) -> None:
    """A person editing the file by hand is told where the mistake is and how to fix it."""
    errors = _errors(text)
    assert any(expected in line for line in errors), errors
    assert all(line.startswith("/home/me/.config/TrayProxy/config.toml:") for line in errors)


def test_every_problem_is_reported_not_only_the_first() -> None:
    """Two mistakes in one file are both listed, in file order."""
    errors = _errors('[listen]\nport = "x"\n[targets.a]\nurl = "ftp://x"\n')
    assert [line.split(":")[1] for line in errors] == ["2", "4"]


@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    """Whatever is in the file, the app gets a ConfigError it can show, never a crash."""
    try:
        parse_config(text)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = ["parsed"]
    assert problems


def test_proxy_setting_per_target_and_for_the_whole_file() -> None:
    """A top-level ``proxy`` applies to every target without its own; ``proxy = false`` on a
    target means direct; a target's proxy password is among the secrets the logs mask."""
    config = parse_config(
        'proxy = "http://corp:3128"\n'
        '[targets.a]\nurl = "https://a.example.test"\n'
        '[targets.b]\nurl = "http://127.0.0.1:11434"\nproxy = false\n'
        '[targets.c]\nurl = "https://c.example.test"\nproxy = "http://u:pw-secret-77@other:8080"\n'
    )
    assert config.targets["a"].proxy == "http://corp:3128"
    assert config.targets["b"].proxy == ""
    assert config.targets["c"].proxy == "http://u:pw-secret-77@other:8080"
    from desktop.config.keys import resolve_target

    assert "pw-secret-77" in resolve_target(config.targets["c"]).target.secrets()


def test_bad_proxy_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[targets.a]\nurl = "https://a.example.test"\nproxy = "ftp://u:hunter2@x"\n', path="c.toml")
    assert "c.toml:3:1:" in str(caught.value)
    assert "hunter2" not in str(caught.value)
