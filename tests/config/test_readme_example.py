"""The README's annotated config file is a real one: `trayproxy config check` passes it clean,
and it shows every setting declared in desktop/config/options.py (the keys the parser knows), so
the documentation cannot drift from the code."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from desktop.config import options
from desktop.config.options import Option
from desktop.config.parse import KEY_SOURCES, LISTEN_KEYS, LOG_KEYS, SECURITY_KEYS, TARGET_KEYS, TOP_KEYS

README = Path(__file__).resolve().parents[2] / "README.md"
# The company CA file the example's gateway trusts; the test puts a real one in its place.
README_CA_BUNDLE = "/etc/ssl/certs/corp-root-ca.pem"
SECTION = "## `trayproxy serve` and the config file"
CHECK_TIMEOUT_S = 60.0


def readme_example() -> str:
    """The first TOML block of the README's config file section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "no ```toml block in the config file section"
    return match.group(1)


def undocumented_settings(example: str, declared: Sequence[Option[Any]] = options.FILE_SETTINGS) -> list[str]:
    """Where each of the ``declared`` settings the ``example`` does not show would be written
    (``targets.NAME.retries``): a target's setting counts as shown when any target has it."""
    data: dict[str, Any] = tomllib.loads(example)
    targets = data.get(options.TARGETS, {}).values()
    missing = [table for table in options.TABLES if table not in data]
    for option in declared:
        if option.table == options.TARGET:
            shown = any(option.key in table for table in targets)
        elif option.table is not None:
            shown = option.key in (data.get(option.table, {}) if option.table else data)
        else:  # a flag only, with no place in the file
            shown = True
        if not shown:
            missing.append(option.path)
    return missing


def test_the_readme_example_passes_config_check_clean(tmp_path: Path, file_keyring: Path) -> None:
    """Each key source in it is made readable the way a person would (an environment
    variable, an entry in the keychain, the password-manager command on PATH, the company's
    CA file where it says), and then `config check` says OK with no warning at all."""
    import keyring
    import trustme

    example = readme_example()
    assert f'ca_bundle = "{README_CA_BUNDLE}"' in example
    ca_file = tmp_path / "corp-root-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    config = tmp_path / "config.toml"
    config.write_text(example.replace(README_CA_BUNDLE, str(ca_file)), encoding="utf-8")
    keyring.set_password("TrayProxy", "anthropic", "readme-anthropic-key")
    # The example's key command is a password manager's CLI (`op read ...`); a stand-in of the
    # same name prints a token, as the real one would once signed in.
    tools = tmp_path / "bin"
    tools.mkdir()
    op = tools / "op"
    op.write_text("#!/bin/sh\necho readme-gateway-token\n")
    op.chmod(op.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "OPENAI_API_KEY": "readme-openai-key",
        "PATH": os.pathsep.join([str(tools), os.environ.get("PATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "desktop", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{config}: OK, 4 target(s), active: openai\n"


def test_the_readme_example_shows_every_setting() -> None:
    """A setting declared (and so known to the parser) without a line in the README example
    fails here, named."""
    text = readme_example()
    assert undocumented_settings(text) == []
    data: dict[str, Any] = tomllib.loads(text)
    assert set(TOP_KEYS) <= set(data)
    assert set(LISTEN_KEYS) <= set(data["listen"])
    assert set(SECURITY_KEYS) <= set(data["security"])
    assert set(LOG_KEYS) <= set(data["log"])
    targets = data["targets"].values()
    assert set(TARGET_KEYS) <= {key for table in targets for key in table}
    sources = {next(iter(table["key"])) for table in targets if isinstance(table.get("key"), dict)}
    # The plain-string key ("value") is shown as a comment: it is there, but discouraged.
    assert set(KEY_SOURCES) - {"value"} <= sources
    assert '# key = "sk-' in text
    assert any(urlsplit(table["url"]).path.strip("/") for table in targets)  # a URL with a base path
    assert any("{key}" in value for table in targets for value in table.get("headers", {}).values())


ROUTES_SECTION = "### Routes: several targets on one port"


def readme_routes_example() -> str:
    """The TOML block of the README's Routes section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(ROUTES_SECTION) :]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "no ```toml block in the Routes section"
    return match.group(1)


def test_the_readme_routes_example_passes_config_check_and_routes_as_the_readme_says(tmp_path: Path) -> None:
    """With its three keys in the environment, `config check` says OK with no warning; and the
    plan made from it sends what the README says where it says: gpt-4o to openai, then to the
    gateway as openai/gpt-4o; /anthropic/v1/messages to anthropic as /v1/messages; a claude-*
    model to anthropic; GET /v1/models (the model picker) to the active openai."""
    from desktop.config.follow import KeyReader, Overrides, plan_for, read_config

    config = tmp_path / "config.toml"
    config.write_text(readme_routes_example(), encoding="utf-8")
    keys = {"OPENAI_API_KEY": "readme-openai", "ANTHROPIC_API_KEY": "readme-anthropic", "OPENROUTER_API_KEY": "readme-or"}
    result = subprocess.run(
        [sys.executable, "-m", "desktop", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **keys},
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{config}: OK, 3 target(s), active: openai\n"

    plan = plan_for(read_config(config, Overrides()), config, Overrides(), KeyReader())
    routing = plan.main.routing
    assert routing is not None
    assert (routing.retry_after_max_s, routing.cooldown_s) == (2.0, 30.0)

    def sent(path: str, model: str | None = None) -> list[tuple[str, str, str | None]]:
        body = f'{{"model": "{model}", "messages": []}}'.encode() if model else None
        return [
            (route.target, route.path, route.send_model or route.model)
            for route in routing.table.attempts(path, "", body, upgrade=False)
        ]

    assert sent("/v1/chat/completions", "gpt-4o") == [
        ("openai", "/v1/chat/completions", "gpt-4o"),
        ("gateway", "/v1/chat/completions", "openai/gpt-4o"),
    ]
    assert sent("/anthropic/v1/messages") == [("anthropic", "/v1/messages", None)]
    assert sent("/v1/messages", "claude-sonnet-4-5") == [("anthropic", "/v1/messages", "claude-sonnet-4-5")]
    assert sent("/v1/models") == [("openai", "/v1/models", None), ("gateway", "/v1/models", None)]
