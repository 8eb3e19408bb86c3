"""`trayproxy config show`: every key masked, and nothing that is not a key.

Header templates such as ``Authorization = "Bearer {key}"`` hold no secret, but the credential
header shape masked them to ``"***"``, so a bug report could not show which header gets the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from background import free_port, wait_until
from cli_process import EXIT_TIMEOUT_S, ServeProcess, run_cli

from desktop.config.store import DEFAULT_CONFIG
from desktop.redaction import redact_text

CANARY = "tpcanary-51d0c2e8aa"


def _show(path: Path) -> str:
    result = run_cli("config", "show", "--config", str(path))
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


# Keys of no known shape (only where they stand says they are keys), as an attacker trial of
# `config show` wrote them: every file passes `config check`.
HEX_KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
# id: (file text, the line `config show` prints for the setting holding the key).
UNUSUAL_SPELLINGS = {
    "quoted key name": (f'[targets.a]\nurl = "https://a.example"\n"key" = "{HEX_KEY}"\n', '"key" = "***"'),
    "multi-line string": (
        f'[targets.a]\nurl = "https://a.example"\nkey = """\nQUOTEDMULTILINE{HEX_KEY}\n"""\n',
        'key = "***"',
    ),
    "multi-line literal": (f"[targets.a]\nurl = \"https://a.example\"\nkey = '''\n{HEX_KEY}'''\n", 'key = "***"'),
    "inline table under [targets]": (
        f'[targets]\ne = {{ url = "https://e.example", key = "INLINETABLEKEY{HEX_KEY}" }}\n',
        'e = { url = "https://e.example", key = "***" }',
    ),
    "dotted keys": (f'[targets.a]\nurl = "https://a.example"\nkey.value = \'{HEX_KEY}\'\n', 'key.value = "***"'),
    "dotted from the top": (
        f'targets.a.url = "https://a.example"\ntargets.a.key = "{HEX_KEY}"\n',
        'targets.a.key = "***"',
    ),
    "key source table": (
        f'[targets.a]\nurl = "https://a.example"\n[targets.a.key]\nvalue = "{HEX_KEY}"\n',
        '[targets.a.key]\nvalue = "***"',
    ),
    "custom header": (
        f'[targets.apim]\nurl = "https://apim.example"\nheaders = {{ "Ocp-Apim-Subscription-Key" = "c0ffee{HEX_KEY}" }}\n',
        'headers = { "Ocp-Apim-Subscription-Key" = "***" }',
    ),
    "header table": (
        f'[targets.a]\nurl = "https://a.example"\n[targets.a.headers]\nX-Tenant-Secret = "{HEX_KEY}"\n',
        'X-Tenant-Secret = "***"',
    ),
    "env holding the key": (
        f'[targets.a]\nurl = "https://a.example"\nkey = {{ env = "{HEX_KEY}" }}\n',
        'key = { env = "***" }',
    ),
    "env placeholder holding the key": (
        f'[targets.a]\nurl = "https://a.example"\nheaders = {{ Authorization = "Bearer {{env:k{HEX_KEY}}}" }}\n',
        'headers = { Authorization = "***" }',
    ),
    "key in the url's path": (f'[targets.gw]\nurl = "https://gw.example/v1/{HEX_KEY}"\n', 'url = "https://gw.example/v1/***"'),
    "commented-out key": (
        f'[targets.a]\nurl = "https://a.example"\nkey = {{ env = "A_KEY" }}\n# key = "{HEX_KEY}"\n',
        'key = { env = "A_KEY" }\n# key = "***"',
    ),
}


@pytest.mark.parametrize(("text", "masked"), UNUSUAL_SPELLINGS.values(), ids=UNUSUAL_SPELLINGS.keys())
def test_config_show_masks_a_key_however_the_toml_spells_it(tmp_path: Path, text: str, masked: str) -> None:
    """`config show` masked keys by line text (`key = "..."` at a line's start), so a file
    spelt otherwise, valid all the same, printed its key for a bug report. It now masks from
    the parsed document: the key goes, the setting stays, so the output still says which."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    shown = _show(path)
    assert HEX_KEY not in shown
    # tomlkit before 0.13 writes a replaced literal string with double quotes, later ones keep
    # the single quotes: either is right.
    assert masked in shown.replace("'***'", '"***"'), shown


def test_config_show_keeps_what_is_no_key(tmp_path: Path) -> None:
    """Around the masked values, everything a bug report needs is shown as written: names,
    env variable names, keychain entries, header placeholders, short and plain header values,
    URLs, comments."""
    text = (
        "# my setup\n"
        '[targets.a]   # the main one\n'
        'url = "https://a.example/openai/deployments/gpt-4o-2024-08-06"\n'
        'key = { env = "AZURE_OPENAI_API_KEY_2024" }\n'
        'headers = { api-key = "{key}", anthropic-version = "2023-06-01", X-Team = "ml" }\n'
        "[targets.b]\n"
        'url = "https://b.example"\n'
        'key = { keyring = "work-account" }\n'
        'headers.Authorization = "Bearer {env:B_TOKEN}"\n'
        "# plain words = not a setting\n"
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert _show(path) == text


def test_config_show_refuses_a_file_that_is_not_toml(tmp_path: Path) -> None:
    """Where the keys of a broken file are cannot be told, so none of it is printed."""
    path = tmp_path / "config.toml"
    path.write_text(f'[targets.a\nkey = "{HEX_KEY}"\n')
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 1
    assert HEX_KEY not in result.stdout + result.stderr
    assert "not valid TOML" in result.stderr


def test_a_key_written_as_an_env_variable_name_is_reported_without_it(tmp_path: Path) -> None:
    """`key = { env = "<the key>" }` (the key pasted where its variable's name belongs): the
    warning in `config check` and `serve` said "the environment variable <key> is not set".
    It now says what is wrong without the key."""
    path = tmp_path / "config.toml"
    path.write_text(f'active = "a"\n[targets.a]\nurl = "http://127.0.0.1:9"\nkey = {{ env = "{HEX_KEY}" }}\n'
                    'headers = { Authorization = "Bearer {key}" }\n')
    check = run_cli("config", "check", "--config", str(path))
    assert "the value of `env` looks like a key, not a variable name" in check.stderr, check.stderr
    serve = ServeProcess(path, "--port", str(free_port()), "--host", "127.0.0.1")
    try:
        assert wait_until(lambda: bool(serve.lines_with("looks like a key")), timeout_s=EXIT_TIMEOUT_S), serve.stderr
    finally:
        printed = serve.stop()
    assert HEX_KEY not in check.stdout + check.stderr + printed
