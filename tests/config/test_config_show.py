"""`trayproxy config show`: every key masked, and nothing that is not a key.

Header templates such as ``Authorization = "Bearer {key}"`` hold no secret, but the credential
header shape masked them to ``"***"``, so a bug report could not show which header gets the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.config.store import DEFAULT_CONFIG
from desktop.engine.redact import redact_text

CANARY = "tpcanary-51d0c2e8aa"
EXIT_TIMEOUT_S = 30.0


def _show(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "desktop", "config", "show", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_config_show_prints_the_default_files_header_templates_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(DEFAULT_CONFIG)
    shown = _show(path)
    assert 'headers = { Authorization = "Bearer {key}" }' in shown
    assert 'headers = { x-api-key = "{key}" }' in shown
    assert '# headers = { api-key = "{key}" }' in shown
    assert shown == DEFAULT_CONFIG  # nothing in it is a secret


def test_config_show_prints_keep_headers_as_written(tmp_path: Path) -> None:
    """The names of kept credential headers are not secrets: a bug report shows them."""
    path = tmp_path / "config.toml"
    line = 'keep_headers = ["authorization", "X-Api-Key"]'
    path.write_text(f'[targets.gw]\nurl = "https://gw.example"\nheaders = {{ api-key = "{{key}}" }}\nkey = "{CANARY}"\n{line}\n')
    shown = _show(path)
    assert line in shown
    assert CANARY not in shown


def test_config_show_still_masks_keys_written_into_headers(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[targets.a]\nurl = "https://a.example"\n'
        f'headers = {{ Authorization = "Bearer {CANARY}", x-api-key = "{CANARY}2", X-Team = "ml" }}\n'
        f'[targets.b]\nurl = "https://b.example"\nkey = "{CANARY}3"\nheaders = {{ api-key = "{{key}}" }}\n'
    )
    shown = _show(path)
    assert CANARY not in shown
    assert 'headers = { Authorization = "***", x-api-key = "***", X-Team = "ml" }' in shown
    assert 'key = "***"' in shown
    assert 'headers = { api-key = "{key}" }' in shown


@pytest.mark.parametrize(
    "template", ["Authorization: Bearer {key}", 'x-api-key = "{env:ANTHROPIC_API_KEY}"', "api-key: {key}"]
)
def test_a_placeholder_is_not_a_secret(template: str) -> None:
    assert redact_text(template) == template


@pytest.mark.parametrize(
    "text",
    [f"Authorization: Bearer {{key}}{CANARY}", f"Authorization: Bearer {CANARY}", f'api-key = "{CANARY} {{key}}"'],
)
def test_anything_beside_a_placeholder_is_masked(text: str) -> None:
    masked = redact_text(text)
    assert CANARY not in masked
    assert masked.endswith(("***", '***"'))


def test_config_show_masks_a_token_written_into_a_key_command(tmp_path: Path) -> None:
    """A key command is shown (it says where the key comes from), but a token typed into the
    command line itself is masked; the command's plain words stay readable."""
    token = "glpat-Zx81kQpA0mW3vN7tR2sY"
    path = tmp_path / "config.toml"
    path.write_text(
        '[targets.a]\nurl = "https://a.example"\n'
        f'key = {{ command = "gitlab-token-helper --token {token} --scope api" }}\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    shown = _show(path)
    assert token not in shown
    assert 'command = "gitlab-token-helper --token *** --scope api"' in shown
