"""Messages that leave a new user nowhere to go now name the next step.

Before the first run, `config check` said "the file does not exist" and `config show` printed a
raw errno; with no OS keychain, `config set-key` (which `config check` itself suggests for an
unset variable) failed without naming the sources that work without one; `serve --target
127.0.0.1:18101` (no scheme) said only that no target has that name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from background import free_port
from cli_process import run_cli


@pytest.mark.parametrize("action", [["check"], ["show"], ["test"], ["set-key", "openai"]])
def test_config_commands_before_the_first_run_say_how_to_create_the_file(tmp_path: Path, action: list[str]) -> None:
    missing = tmp_path / "config.toml"
    result = run_cli("config", *action, "--config", str(missing))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{missing}: the file does not exist yet; run 'trayproxy serve' once, or 'trayproxy config edit',"
        " to create it with the default targets"
    )
    assert not missing.exists()


def test_set_key_without_a_keychain_names_the_sources_that_need_none(tmp_path: Path) -> None:
    """The test environment has keyring's "no keychain" backend, as a headless Linux box has."""
    config = tmp_path / "config.toml"
    config.write_text('[targets.openai]\nurl = "https://api.openai.com"\n')
    result = run_cli("config", "set-key", "openai", "--config", str(config), stdin="tptest-some-key\n")
    assert result.returncode == 1
    assert "could not store the key: no OS keychain is available" in result.stderr
    assert 'key = { env = "NAME" }' in result.stderr
    assert 'key = { command = "..." }' in result.stderr
    assert "tptest-some-key" not in result.stdout + result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:18101", "localhost:11434/v1", "[::1]:8080"])
def test_serve_with_an_address_missing_its_scheme_suggests_the_url(tmp_path: Path, address: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[targets.ollama]\nurl = "http://127.0.0.1:11434"\n')
    result = run_cli("serve", "--config", str(config), "--target", address, "--port", str(free_port()))
    assert result.returncode == 2
    assert f"no target named '{address}'" in result.stderr
    assert result.stderr.rstrip().endswith(f"for a URL, write its scheme: --target http://{address}")


def test_serve_with_a_misspelt_name_gets_no_url_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[targets.ollama]\nurl = "http://127.0.0.1:11434"\n')
    result = run_cli("serve", "--config", str(config), "--target", "olama", "--port", str(free_port()))
    assert result.returncode == 2
    assert "http://olama" not in result.stderr
