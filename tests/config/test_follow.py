"""The one way from the config file to a plan: read, tend the files on purpose, plan.

What a person would notice: reading a config (``config check``, a reload) never changes a file
behind their back; a bad edit leaves the proxy on its last good plan with the file, line and
column of the mistake; a key command (a password manager, an SSO page) runs once per changed
entry, and again after a rejection no more often than the interval allows; the command line's
flags win over the file for every listener and target.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from desktop.config.follow import KeyReader, Overrides, follow, plan_for, read_config, tend_files
from desktop.config.localtoken import token_path
from desktop.config.model import Secret, Target
from desktop.config.parse import ConfigError

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="file modes are POSIX")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def counting_command(tmp_path: Path) -> tuple[str, Path]:
    """A key command printing ``key-1``, ``key-2``, ...; and the file counting its runs."""
    counter = tmp_path / "runs.txt"
    counter.write_text("0")
    script = tmp_path / "next_key.py"
    script.write_text(
        "import pathlib\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1\n"
        "fresh = counter.with_name(counter.name + '.new'); fresh.write_text(str(runs)); fresh.replace(counter)\n"
        "print(f'key-{runs}')\n"
    )
    return f'"{sys.executable}" "{script}"', counter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@posix_only
def test_reading_and_planning_write_nothing_tending_does(tmp_path: Path) -> None:
    """A file holding a key and requiring the local token: read_config and plan_for leave its
    mode and the token folder as they were (the plan then has no token, so every request would be
    refused); tend_files is the step that narrows the file and makes the token, and the plan made
    after it carries that token."""
    path = write(
        tmp_path / "config.toml",
        'active = "a"\n[security]\nrequire_token = true\n'
        '[targets.a]\nurl = "http://127.0.0.1:9"\nkey = "sk-in-the-file-0123456789"\n'
        'headers = { Authorization = "Bearer {key}" }\n',
    )
    path.chmod(0o644)
    keys = KeyReader()
    config = read_config(path, Overrides())
    before = plan_for(config, path, Overrides(), keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not token_path(path).exists()
    assert before.settings.require_token
    assert before.settings.local_token is None

    notices = tend_files(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(notices) == 1
    assert "readable by you only" in notices[0]
    assert "sk-in-the-file" not in notices[0]
    assert stat.S_IMODE(token_path(path).stat().st_mode) == 0o600
    after = plan_for(config, path, Overrides(), keys)
    assert after.settings.local_token is not None
    assert after.settings.local_token.reveal() == token_path(path).read_text().strip()


def test_a_bad_edit_keeps_the_last_good_plan_and_says_where(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", 'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n')
    keys = KeyReader()
    good, _ = follow(
        path, Overrides(), keys, plan_for(read_config(path, Overrides()), path, Overrides(), keys)
    )
    assert good.config_error is None
    assert good.target.url == "http://127.0.0.1:9"

    write(path, 'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nport = "eighty"\n')
    kept, notices = follow(path, Overrides(), keys, good)
    assert kept.listeners == good.listeners
    assert kept.config_error is not None
    assert kept.config_error.startswith(f"{path}:4:")
    assert notices == []

    # A target pinned on the command line (serve --target b) that a save removed.
    write(
        path,
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n[targets.b]\nurl = "http://127.0.0.1:10"\n',
    )
    pinned, _ = follow(path, Overrides(), keys, good, chosen="b")
    assert pinned.chosen == "b"
    assert pinned.target.url == "http://127.0.0.1:10"
    write(path, 'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n')
    kept, _ = follow(path, Overrides(), keys, pinned, chosen="b")
    assert kept.listeners == pinned.listeners
    assert kept.config_error == f"{path}: target 'b' is no longer in the file"


def test_an_unknown_chosen_target_names_the_known_ones_without_reading_twice(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\n[targets.b]\nurl = "http://127.0.0.1:10"\n',
    )
    with pytest.raises(KeyError) as error:
        read_config(path, Overrides(), chosen="c")
    assert error.value.args == ("c", ("a", "b"))
    with pytest.raises(ConfigError):
        read_config(write(path, "active = \n"), Overrides())


def test_a_key_command_runs_once_per_changed_entry_and_refreshes_at_most_once_an_interval(
    tmp_path: Path,
) -> None:
    command, counter = counting_command(tmp_path)
    path = write(
        tmp_path / "config.toml",
        f'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nkey = {{ command = \'{command}\' }}\n'
        'headers = { Authorization = "Bearer {key}" }\n',
    )
    clock = Clock()
    keys = KeyReader(refresh_interval_s=30.0, clock=clock)
    plan = plan_for(read_config(path, Overrides()), path, Overrides(), keys)
    assert [value.reveal() for _, value in plan.target.add_headers] == ["Bearer key-1"]
    # The same entry again (a save that changed something else): the key is not read again.
    write(path, path.read_text() + "# a comment\n")
    plan, _ = follow(path, Overrides(), keys, plan)
    assert counter.read_text() == "1"
    assert [value.reveal() for _, value in plan.target.add_headers] == ["Bearer key-1"]

    spec = plan.config.targets["a"] if plan.config is not None else None
    assert spec is not None
    refreshed = keys.refresh(spec)
    assert refreshed is not None
    assert counter.read_text() == "2"
    assert keys.refresh(spec) is None  # too soon
    clock.now += 29.0
    assert keys.refresh(spec) is None
    assert counter.read_text() == "2"
    clock.now += 1.0
    assert keys.refresh(spec) is not None
    assert counter.read_text() == "3"
    # The refreshed key is what the next plan serves, without running the command again.
    plan = plan_for(plan.config, path, Overrides(), keys)  # type: ignore[arg-type]
    assert [value.reveal() for _, value in plan.target.add_headers] == ["Bearer key-3"]
    assert counter.read_text() == "3"


def test_flags_win_over_the_file_for_every_listener_and_target(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        'active = "a"\n[listen]\nport = 8100\n'
        '[targets.a]\nurl = "http://127.0.0.1:9"\nheaders = { Authorization = "Bearer file" }\n'
        '[targets.b]\nurl = "http://127.0.0.1:10"\nport = 8101\nconnect_timeout = 3\n',
    )
    overrides = Overrides(
        hosts=("127.0.0.1",),
        port=8200,
        allowed_hosts=("devbox.local",),
        headers=(("authorization", Secret("Bearer flag")),),
        connect_timeout_s=1.5,
        insecure=True,
    )
    plan = plan_for(read_config(path, overrides), path, overrides, KeyReader())
    main, own = plan.listeners
    assert (main.own, main.settings.port, main.settings.hosts) == (None, 8200, ("127.0.0.1",))
    assert (own.own, own.settings.port, own.settings.hosts) == ("b", 8101, ("127.0.0.1",))
    assert "devbox.local" in main.settings.allowed_hosts
    assert "localhost" in main.settings.allowed_hosts
    # A key given with --header is the chosen target's alone: b, on a port of its own, is
    # another service and keeps no key of it (it adds none of its own here).
    assert [(name, value.reveal()) for name, value in main.target.add_headers] == [
        ("authorization", "Bearer flag")
    ]
    assert own.target.add_headers == ()
    for target in (main.target, own.target):
        assert target.connect_timeout_s == 1.5
        assert not target.verify_tls
    assert plan.chosen == "a"
    assert plan.key_headers("a", main.target) == frozenset({"authorization"})
    with pytest.raises(ValueError, match="timeouts must be positive"):
        Overrides(read_timeout_s=-1).target(Target(url="http://127.0.0.1:9"))


def test_an_unusable_token_file_is_reported_once_per_reading(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the token file should be: the proxy refuses every request (no token in
    the settings), and the log says why once, not once per step (found by the attacker trial)."""
    path = write(
        tmp_path / "config.toml",
        'active = "a"\n[security]\nrequire_token = true\n[targets.a]\nurl = "http://127.0.0.1:9"\n',
    )
    token_path(path).mkdir()
    config = read_config(path, Overrides())
    with caplog.at_level("ERROR", logger="trayproxy.config"):
        tend_files(path, config)
        plan = plan_for(config, path, Overrides(), KeyReader())
    assert plan.settings.require_token
    assert plan.settings.local_token is None
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    assert str(token_path(path)) in errors[0]
