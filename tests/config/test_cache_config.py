"""A target's ``cache`` mode and the ``[cache]`` table, from the file (and ``serve --cache``) to the plan.

What a person would notice: ``cache = "replay"`` on a target reaches the running proxy as that
target's mode, and ``[cache]`` as the recording's size and pace; a misspelt mode or pace is
pointed at by file:line:col with the word meant; ``serve --cache MODE`` sets the mode of the
target it serves and no other; changing a mode in the file (the tray's Cache menu writes it)
does not run the target's key command again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_process import run_cli
from test_follow import counting_command, write

from desktop.config.follow import KeyReader, Overrides, follow, plan_for, read_config
from desktop.config.model import Recording
from desktop.config.parse import ConfigError, parse_config

PATH = "/home/me/.config/TrayProxy/config.toml"

RECORDED = """\
active = "openai"

[cache]
max_mib = 64
pace = "recorded"

[targets.openai]
url = "https://api.openai.com"
cache = "replay"

[targets.anthropic]
url = "https://api.anthropic.com"
port = 8001
cache = "Offline"

[targets.ollama]
url = "http://127.0.0.1:11434"
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path=PATH)
    return str(info.value).splitlines()


def test_each_targets_mode_and_the_cache_table_are_read() -> None:
    """Modes are read per target (in any case, as a person may write "Offline"), off when left
    out; [cache] gives the size and pace, the declared defaults without it."""
    config = parse_config(RECORDED, path=PATH)
    assert {name: spec.cache for name, spec in config.targets.items()} == {
        "openai": "replay",
        "anthropic": "offline",
        "ollama": "off",
    }
    assert config.cache == Recording(max_mib=64, pace="recorded")
    plain = parse_config('[targets.a]\nurl = "http://127.0.0.1:9"\n', path=PATH)
    assert plain.targets["a"].cache == "off"
    assert plain.cache == Recording(max_mib=1024, pace="fast")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[targets.a]\nurl = "http://x"\ncache = "replya"\n',
            f"{PATH}:3:1: unknown cache mode 'replya' (did you mean 'replay'?)",
            id="mode-did-you-mean",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\n  cache = "always"\n',
            f"{PATH}:3:3: unknown cache mode 'always' (one of off, record, replay, offline)",
            id="mode-unknown",
        ),
        pytest.param(
            '[targets.a]\nurl = "http://x"\ncache = true\n',
            f"{PATH}:3:1: 'targets.a.cache' must be a string, not true or false",
            id="mode-bool",
        ),
        pytest.param(
            '[cache]\npace = "slow"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: unknown cache pace 'slow' (one of fast, recorded)",
            id="pace-unknown",
        ),
        pytest.param(
            '[cache]\nmax_mib = 0\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: 'cache.max_mib' must be from 1 to 1048576 MiB (it is 0)",
            id="size-zero",
        ),
        pytest.param(
            '[cache]\nmax_mib = 1.5\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: 'cache.max_mib' must be a whole number, not a number",
            id="size-fraction",
        ),
        pytest.param(
            '[cache]\nmax_mb = 10\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:2:1: unknown setting 'cache.max_mb' (did you mean 'max_mib'?)",
            id="table-key-did-you-mean",
        ),
        pytest.param(
            'cache = "replay"\n[targets.a]\nurl = "http://x"\n',
            f"{PATH}:1:1: 'cache' must be a table, not a string",
            id="mode-at-the-top",
        ),
    ],
)
def test_mistakes_are_reported_with_position_and_fix(text: str, expected: str) -> None:
    assert expected in errors(text)


def test_the_plan_carries_the_modes_the_recording_and_serves_flag_for_the_chosen_target(tmp_path: Path) -> None:
    """The plan's targets carry their modes (the one on a port of its own too) and the plan the
    file's [cache]; ``serve --cache record`` sets the chosen target's mode only: another
    target, on a port of its own, keeps the file's."""
    path = write(tmp_path / "config.toml", RECORDED)
    plan = plan_for(read_config(path, Overrides()), path, Overrides(), KeyReader())
    assert (plan.target.cache, plan.own_ports[0].target.cache) == ("replay", "offline")
    assert plan.cache == Recording(max_mib=64, pace="recorded")

    flagged = Overrides(cache="record")
    plan = plan_for(read_config(path, flagged), path, flagged, KeyReader())
    assert (plan.target.cache, plan.own_ports[0].target.cache) == ("record", "offline")
    chosen = plan_for(read_config(path, flagged, chosen="ollama"), path, flagged, KeyReader(), chosen="ollama")
    assert chosen.target.cache == "record"
    assert chosen.own_ports[0].target.cache == "offline"


def test_changing_a_mode_in_the_file_does_not_run_the_key_command_again(tmp_path: Path) -> None:
    """The tray's Cache menu saves the mode in the file, and the proxy reloads it: the new mode
    is served, while the key command (a password manager, an SSO page) is not run again."""
    command, counter = counting_command(tmp_path)
    entry = (
        f'[targets.a]\nurl = "http://127.0.0.1:9"\nkey = {{ command = \'{command}\' }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    path = write(tmp_path / "config.toml", entry)
    keys = KeyReader()
    plan = plan_for(read_config(path, Overrides()), path, Overrides(), keys)
    assert (plan.target.cache, counter.read_text()) == ("off", "1")
    write(path, entry + 'cache = "replay"\n')
    plan, _ = follow(path, Overrides(), keys, plan)
    assert plan.config_error is None
    assert plan.target.cache == "replay"
    assert [value.reveal() for _, value in plan.target.add_headers] == ["Bearer key-1"]
    assert counter.read_text() == "1"


def test_serve_refuses_an_unknown_cache_mode_naming_the_modes(tmp_path: Path) -> None:
    result = run_cli("serve", "--target", "http://127.0.0.1:9", "--port", "0", "--cache", "replya")
    assert result.returncode == 2
    assert "--cache" in result.stderr
    assert "'off', 'record', 'replay', 'offline'" in result.stderr


def test_config_show_shows_the_modes_and_the_cache_table_as_written(tmp_path: Path) -> None:
    """Nothing about the recording is a secret: a bug report shows every line of it."""
    path = write(tmp_path / "config.toml", RECORDED)
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    for line in ('cache = "replay"', 'cache = "Offline"', "[cache]", "max_mib = 64", 'pace = "recorded"'):
        assert line in result.stdout
