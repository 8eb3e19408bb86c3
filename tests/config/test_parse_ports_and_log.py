"""Targets on ports of their own, and the [log] table: what they parse into, and each mistake
pointed at by file:line:col with words a person can act on."""

from __future__ import annotations

import pytest

from desktop.config.model import LogSettings
from desktop.config.parse import ConfigError, parse_config

PATH = "/home/me/.config/TrayProxy/config.toml"

TWO_TOOLS = """\
active = "openai"

[listen]
port = 8000

[log]
level = "WARNING"
access = false

[targets.openai]
url = "https://api.openai.com"

[targets.anthropic]
url = "https://api.anthropic.com"
port = 8001

[targets.ollama]
url = "http://127.0.0.1:11434"
port = 8002
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=PATH)
    return str(info.value).splitlines()


def test_targets_with_ports_of_their_own_and_log_settings_parse() -> None:
    """Each target's own port is kept, in file order; [log] level is taken in any case."""
    config = parse_config(TWO_TOOLS, path=PATH)
    assert config.target_ports() == {"anthropic": 8001, "ollama": 8002}
    assert config.targets["openai"].port is None
    assert config.log == LogSettings(level="warning", access=False)


def test_no_log_table_means_info_with_request_lines() -> None:
    config = parse_config('[targets.a]\nurl = "http://127.0.0.1:9"\n', path=PATH)
    assert config.log == LogSettings(level="info", access=True)
    assert config.target_ports() == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[listen]\nport = 8000\n[targets.a]\nurl = "http://x"\n[targets.b]\nurl = "http://y"\nport = 8000\n',
            f"{PATH}:7:1: port 8000 of target 'b' is the main port ([listen] port); pick another",
            id="same-as-main",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\n[targets.b]\nurl = "http://y"\nport = 8001\n'
            '[targets.c]\nurl = "http://z"\nport = 8001\n',
            f"{PATH}:8:1: port 8001 of target 'c' is already the port of target 'b'",
            id="same-as-another-target",
        ),
        pytest.param(
            # No [listen] table: the main port is the default, 8000.
            '[targets.a]\nurl = "http://x"\n  port = 8000\n',
            f"{PATH}:3:3: port 8000 of target 'a' is the main port ([listen] port); pick another",
            id="same-as-default-main",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nport = 0\n',
            f"{PATH}:3:1: port 0 is not between 1 and 65535",
            id="port-zero",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nport = "8001"\n',
            f"{PATH}:3:1: 'targets.a.port' must be a whole number, not a string",
            id="port-string",
        ),
        pytest.param(
            '[log]\nlevel = "warn"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: unknown log level 'warn' (did you mean 'warning'?)",
            id="level-did-you-mean",
        ),
        pytest.param(
            '[log]\nlevel = "loud"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: unknown log level 'loud' (one of debug, info, warning, error)",
            id="level-unknown",
        ),
        pytest.param(
            '[log]\nlevel = 10\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: 'log.level' must be a string, not a whole number",
            id="level-number",
        ),
        pytest.param(
            '[log]\naccess = "yes"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: 'log.access' must be true or false, not a string",
            id="access-string",
        ),
        pytest.param(
            '[log]\nacess = true\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: unknown setting 'log.acess' (did you mean 'access'?)",
            id="log-key-did-you-mean",
        ),
        pytest.param(
            'log = "debug"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:1:1: 'log' must be a table, not a string",
            id="log-not-a-table",
        ),
        pytest.param(
            '[logs]\nlevel = "debug"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:1:1: unknown setting 'logs' (did you mean 'log'?)",
            id="table-did-you-mean",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\nprot = 8001\n',
            f"{PATH}:3:1: unknown setting 'targets.a.prot' (did you mean 'port'?)",
            id="target-port-did-you-mean",
        ),
    ],
)
def test_mistakes_are_reported_with_position_and_fix(text: str, expected: str) -> None:
    assert expected in errors(text)


def test_every_port_clash_is_listed_not_only_the_first() -> None:
    text = (
        '[listen]\nport = 9000\n[targets.a]\nurl = "http://x"\nport = 9000\n'
        '[targets.b]\nurl = "http://y"\nport = 9000\n[log]\nlevel = "verbose"\n'
    )
    assert errors(text) == [
        f"{PATH}:5:1: port 9000 of target 'a' is the main port ([listen] port); pick another",
        f"{PATH}:8:1: port 9000 of target 'b' is the main port ([listen] port); pick another",
        f"{PATH}:10:1: unknown log level 'verbose' (one of debug, info, warning, error)",
    ]


def test_the_default_file_logs_at_info_with_request_lines_and_no_own_ports() -> None:
    """The file written on first run spells out [log] and hints at a port of its own."""
    from desktop.config.store import DEFAULT_CONFIG

    config = parse_config(DEFAULT_CONFIG)
    assert config.log == LogSettings()
    assert config.target_ports() == {}
    assert "# port = 8001" in DEFAULT_CONFIG
