"""Each setting is declared once, in desktop/config/options.py, and everything else reads it.

What a developer would notice if it slipped: a setting added in one place is unknown in another
(the parser calls it an unknown setting, the README never shows it, `serve --help` names another
default than the one that applies, the first-run file writes another value than the default).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from cli_process import EXIT_TIMEOUT_S, run_cli
from test_readme_example import readme_example, undocumented_settings

from desktop.config import options
from desktop.config.options import Option
from desktop.config.store import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[2]
# Where the copied options.py gets its new setting: the first line of the targets' declaration.
TARGET_DECLARATION = "TARGET_SETTINGS: tuple[Option[Any], ...] = (\n"
NEW_SETTING = 'Option(TARGET, "retries", (int,), 2, "times a failed request is sent again")'


def check_config(package_root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`trayproxy config check` run from the ``desktop`` package under ``package_root``."""
    return subprocess.run(
        [sys.executable, "-m", "desktop", "config", "check", "--config", str(config)],
        cwd=package_root,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(package_root)},
        check=False,
    )


def test_a_setting_declared_alone_is_read_by_the_parser_and_named_by_the_readme_check(tmp_path: Path) -> None:
    """Adding a setting takes one declaration: in a copy of the package whose options.py alone
    gains `retries` (no other file touched), `config check` takes `retries = 3` in a target as
    OK and refuses `retries = "three"` for its declared type, where the real package calls it
    an unknown setting; and the README check names the setting the example does not show."""
    root = tmp_path / "src"
    shutil.copytree(REPO / "desktop", root / "desktop", ignore=shutil.ignore_patterns("__pycache__"))
    declaration = root / "desktop" / "config" / "options.py"
    source = declaration.read_text(encoding="utf-8")
    assert source.count(TARGET_DECLARATION) == 1
    declaration.write_text(source.replace(TARGET_DECLARATION, f"{TARGET_DECLARATION}    {NEW_SETTING},\n"))
    config = tmp_path / "config.toml"
    target = '[targets.local]\nurl = "http://127.0.0.1:9"\n'

    config.write_text(f"{target}retries = 3\n", encoding="utf-8")
    known = check_config(root, config)
    assert known.returncode == 0, known.stderr
    assert known.stdout == f"{config}: OK, 1 target(s), active: local\n"
    unknown = check_config(REPO, config)
    assert unknown.returncode == 1
    assert f"{config}:3:1: unknown setting 'targets.local.retries'" in unknown.stderr

    config.write_text(f'{target}retries = "three"\n', encoding="utf-8")
    mistyped = check_config(root, config)
    assert mistyped.returncode == 1
    assert f"{config}:3:1: 'targets.local.retries' must be a whole number, not a string" in mistyped.stderr

    retries = Option(options.TARGET, "retries", (int,), 2, "times a failed request is sent again")
    assert undocumented_settings(readme_example(), (*options.FILE_SETTINGS, retries)) == ["targets.NAME.retries"]


def test_serve_help_gives_each_flag_the_declared_help_and_default() -> None:
    """`trayproxy serve --help` words each flag as its setting's declaration does, with the
    default that applies when the flag is left out (the config file's value, else the declared one)."""
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    shown = " ".join(result.stdout.split())
    flagged = [option for option in (*options.FILE_SETTINGS, options.STOP_GRACE) if option.flags]
    assert len(flagged) == 16  # every serve flag but --target and --config
    for option in flagged:
        assert all(flag in shown for flag in option.flags)
        assert " ".join(option.flag_text().split()) in shown
    assert "(default: the config file's connect_timeout, else 10)" in options.CONNECT_TIMEOUT.flag_text()
    assert options.STOP_GRACE.flag_text().endswith("(default: 10)")


def test_the_first_run_file_writes_each_setting_it_names_at_its_declared_default() -> None:
    """The first-run file shows the listener, security and log settings as a person would start
    from: each at the default that applies when it is left out."""
    data = tomllib.loads(DEFAULT_CONFIG)
    written = [
        option
        for option in options.LISTEN_SETTINGS + options.SECURITY_SETTINGS + options.LOG_SETTINGS
        if option.key in data.get(option.table or "", {})
    ]
    assert len(written) == 7  # the file shows every one of them
    for option in written:
        value = data[option.table or ""][option.key]
        assert (tuple(value) if isinstance(value, list) else value) == option.default, option.path
