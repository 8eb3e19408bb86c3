"""Where the config file is found, and `trayproxy config path|check` through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from desktop.config.parse import ConfigError
from desktop.config.store import config_path, load_config


def test_config_path_prefers_flag_then_environment_then_user_dir(tmp_path: Path) -> None:
    """--config wins over TRAYPROXY_CONFIG, which wins over the per-user default."""
    env = {"TRAYPROXY_CONFIG": str(tmp_path / "env.toml")}
    assert config_path(str(tmp_path / "flag.toml"), env) == tmp_path / "flag.toml"
    assert config_path(None, env) == tmp_path / "env.toml"
    default = config_path(None, {})
    assert default.name == "config.toml"
    assert default.parent.name == "TrayProxy"


def test_missing_or_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing or binary file is reported like any other mistake, with its path."""
    with pytest.raises(ConfigError, match=r"missing\.toml:1:1: the file does not exist"):
        load_config(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def _cli(*args: str, env_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    if env_path is not None:
        env["TRAYPROXY_CONFIG"] = str(env_path)
    return subprocess.run(
        [sys.executable, "-m", "desktop", *args], capture_output=True, text=True, env=env, timeout=30
    )


def test_config_check_lists_problems_and_fails(tmp_path: Path) -> None:
    """`trayproxy config check` prints path:line:col for each mistake and exits non-zero."""
    path = tmp_path / "config.toml"
    path.write_text('[targets.a]\nurl = "http://127.0.0.1:1"\nread_timout = 3\n')
    result = _cli("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert (
        f"{path}:3:1: unknown setting 'targets.a.read_timout' (did you mean 'read_timeout'?)" in result.stderr
    )


def test_config_check_accepts_a_good_file_from_the_environment(tmp_path: Path) -> None:
    """TRAYPROXY_CONFIG points the CLI at a file; a good one is reported OK with exit 0."""
    path = tmp_path / "mine.toml"
    path.write_text('active = "local"\n[targets.local]\nurl = "http://127.0.0.1:11434"\n')
    result = _cli("config", "check", env_path=path)
    assert result.returncode == 0, result.stderr
    assert "OK, 1 target(s), active: local" in result.stdout
    assert _cli("config", "path", env_path=path).stdout.strip() == str(path)


def test_default_config_is_valid_and_works_at_once() -> None:
    """The file written on first run passes the checker, listens on 127.0.0.1 and ::1 port
    8000 and offers OpenAI (active), Anthropic and a local Ollama."""
    from desktop.config.parse import parse_config
    from desktop.config.store import DEFAULT_CONFIG

    config = parse_config(DEFAULT_CONFIG)
    assert config.active == "openai"
    assert list(config.targets) == ["openai", "anthropic", "ollama"]
    assert config.settings.hosts == ("127.0.0.1", "::1")
    assert config.settings.port == 8000
    assert config.targets["ollama"].url == "http://127.0.0.1:11434"
    assert "# [targets.azure]" in DEFAULT_CONFIG


def test_ensure_config_never_overwrites_the_users_file(tmp_path: Path) -> None:
    """First run creates the file (and its folder); later runs leave the user's edits alone."""
    from desktop.config.store import DEFAULT_CONFIG, ensure_config

    path = tmp_path / "TrayProxy" / "config.toml"
    assert ensure_config(path) is True
    assert path.read_text() == DEFAULT_CONFIG
    path.write_text("# mine\n")
    assert ensure_config(path) is False
    assert path.read_text() == "# mine\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temporary left


def test_config_show_masks_every_key(tmp_path: Path) -> None:
    """`trayproxy config show` prints the file for a bug report or a colleague without any
    key in it: keys written in the file, literal credential headers, key shapes."""
    path = tmp_path / "config.toml"
    path.write_text(
        '# my setup\n[targets.a]\nurl = "https://x.example"\nkey = "tpinfile-0123456789"\n'
        'headers = { Authorization = "Bearer tpliteral-9876543210", "api-key" = "tpazure-5555555555" }\n'
        '[targets.b]\nurl = "https://y.example"\nkey = { value = "tpinline-1111111111" }\n'
    )
    result = _cli("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    for secret in ("tpinfile", "tpliteral", "tpazure", "tpinline"):
        assert secret not in result.stdout
    assert "# my setup" in result.stdout
    assert 'url = "https://x.example"' in result.stdout


def test_config_edit_runs_the_editor_then_checks_the_result(tmp_path: Path) -> None:
    """`trayproxy config edit` opens $EDITOR on the file (creating it first) and, when the
    editor closes, reports a mistake the person just made with its line."""
    import os

    path = tmp_path / "new" / "config.toml"
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'a').write('\\nbogus = 1\\n')\n")
    env = {**os.environ, "EDITOR": f"{sys.executable} {editor}", "VISUAL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "desktop", "config", "edit", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 1
    assert "# TrayProxy configuration" in path.read_text()
    assert "unknown setting 'targets.ollama.bogus'" in result.stderr
    assert f"{path}:" in result.stderr
