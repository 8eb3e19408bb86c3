"""The local access token's file and setting: owner-only, stable, rotatable, checked.

A person turns on ``[security] require_token``: the token is made once, readable by them only,
and stays the same across restarts until they rotate it; a token file someone else could read is
narrowed; a broken one says what to run; and when the file cannot be had at all the proxy is
given no token, so it refuses everything rather than let any program in. Real files in the
test's temporary folder.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from desktop.config.follow import listener_settings, tend_files
from desktop.config.keys import resolve_target
from desktop.config.localtoken import (
    TOKEN_FILE_NAME,
    LocalTokenError,
    brings_own_key,
    ensure_token,
    generate_token,
    read_token,
    rotate_token,
    token_path,
)
from desktop.config.model import LOCAL_TOKEN_PREFIX
from desktop.config.parse import ConfigError, parse_config

posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX's")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_file_sits_next_to_the_config_it_belongs_to(tmp_path: Path) -> None:
    """`--config` and TRAYPROXY_CONFIG each get their own token."""
    assert token_path(tmp_path / "work" / "config.toml") == tmp_path / "work" / TOKEN_FILE_NAME


def test_a_new_token_is_recognisable_long_and_different_each_time() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert token.startswith(LOCAL_TOKEN_PREFIX)
        assert len(token) - len(LOCAL_TOKEN_PREFIX) >= 43  # 32 random bytes, base64url


@posix_only
def test_the_token_is_made_once_owner_only_and_then_stays(tmp_path: Path) -> None:
    """First need makes it (0600, folder created, no temporary left); later reads return it."""
    path = tmp_path / "new-folder" / TOKEN_FILE_NAME
    assert read_token(path) is None
    token = ensure_token(path)
    assert mode_of(path) == 0o600
    assert path.read_text() == token + "\n"
    assert ensure_token(path) == token
    assert read_token(path) == token
    assert sorted(entry.name for entry in path.parent.iterdir()) == [TOKEN_FILE_NAME]


@posix_only
def test_rotating_replaces_it_atomically_and_keeps_it_owner_only(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE_NAME
    first = ensure_token(path)
    inode = path.stat().st_ino
    second = rotate_token(path)
    assert second != first
    assert read_token(path) == second
    assert mode_of(path) == 0o600
    assert path.stat().st_ino != inode  # a rename of a complete file, never a rewrite in place


@posix_only
def test_a_token_file_others_can_read_is_narrowed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / TOKEN_FILE_NAME
    token = ensure_token(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="trayproxy.config"):
        assert read_token(path) == token
    assert mode_of(path) == 0o600
    assert "readable by you only" in caplog.text
    assert token not in caplog.text


def test_a_token_written_by_hand_is_used_and_an_empty_file_gets_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE_NAME
    path.write_text("  my-own-long-token-0123456789\n")
    assert ensure_token(path) == "my-own-long-token-0123456789"
    path.write_text("\n")
    assert ensure_token(path).startswith(LOCAL_TOKEN_PREFIX)


@pytest.mark.parametrize(
    "content",
    ["short", "has spaces in the middle of it", "quote\"inside-0123456789", "~starts-with-tilde-0123"],
    ids=["short", "spaces", "quote", "tilde"],
)
def test_a_token_file_that_cannot_be_a_header_value_says_what_to_run(tmp_path: Path, content: str) -> None:
    """A token must fit in an Authorization header and an unquoted shell line; the error names
    the file and the fix, never the content."""
    path = tmp_path / TOKEN_FILE_NAME
    path.write_text(content + "\n")
    with pytest.raises(LocalTokenError) as error:
        ensure_token(path)
    assert str(path) in str(error.value)
    assert "trayproxy config token --rotate" in str(error.value)
    assert content not in str(error.value)


def test_settings_get_the_token_only_when_they_require_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    off_file = parse_config(BASE)
    tend_files(config, off_file)
    off = listener_settings(off_file, config)
    assert off.local_token is None
    assert not (tmp_path / TOKEN_FILE_NAME).exists()
    on_file = parse_config("[security]\nrequire_token = true\n" + BASE)
    tend_files(config, on_file)
    on = listener_settings(on_file, config)
    assert on.local_token is not None
    assert on.local_token.reveal() == read_token(tmp_path / TOKEN_FILE_NAME)
    assert on.local_token.reveal() not in repr(on)


def test_a_token_that_cannot_be_had_leaves_the_settings_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy then refuses every request (fail closed); the log says which file and why."""
    (tmp_path / TOKEN_FILE_NAME).mkdir()  # a folder where the file should be: unreadable as a token
    with caplog.at_level(logging.ERROR, logger="trayproxy.config"):
        config = parse_config("[security]\nrequire_token = true\n" + BASE)
        tend_files(tmp_path / "config.toml", config)
        settings = listener_settings(config, tmp_path / "config.toml")
    assert settings.require_token
    assert settings.local_token is None
    assert "require_token is on but the local access token" in caplog.text
    assert str(tmp_path / TOKEN_FILE_NAME) in caplog.text


# --- the setting in the file -----------------------------------------------------------------

BASE = '[targets.t]\nurl = "http://127.0.0.1:9"\n'


def test_require_token_is_off_unless_the_file_says_true() -> None:
    assert parse_config(BASE).settings.require_token is False
    assert parse_config("[security]\nrequire_token = true\n" + BASE).settings.require_token is True


def test_require_token_of_the_wrong_type_is_pointed_at() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config('[security]\nrequire_token = "yes"\n' + BASE, path="c.toml")
    assert str(error.value).startswith("c.toml:2:")
    assert "require_token" in str(error.value)


def test_a_misspelt_require_token_gets_a_did_you_mean() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("[security]\nrequire_tokens = true\n" + BASE)
    assert "did you mean 'require_token'" in str(error.value)


@pytest.mark.parametrize(
    ("target_lines", "environ", "own_key"),
    [
        ('key = { env = "K" }\nheaders = { Authorization = "Bearer {key}" }\n', {"K": "sk-abcdef123"}, True),
        ('key = { env = "K" }\nheaders = { x-api-key = "{key}" }\n', {}, False),
        ('headers = { Authorization = "Bearer written-out-0123" }\n', {}, True),
        ('headers = { anthropic-version = "2023-06-01" }\n', {}, False),
        ("", {}, False),
    ],
    ids=["key-read", "key-unreadable", "written-out", "other-header", "none"],
)
def test_brings_own_key_tells_which_targets_would_get_no_credential(
    target_lines: str, environ: dict[str, str], own_key: bool
) -> None:
    """`config check` warns for these: with the token required, the client's credential (the
    token) stops at the proxy, so only a key of the target's own reaches it."""
    spec = parse_config(BASE + target_lines).targets["t"]
    assert brings_own_key(spec, resolve_target(spec, environ).target) is own_key


def test_the_listener_settings_read_the_token_and_never_make_it(tmp_path: Path) -> None:
    """Reading the file's settings writes nothing: with require_token on and no token file yet,
    they carry no token and no file appears; tend_files is the step that makes it, after which
    the same read finds it."""
    path = tmp_path / "config.toml"
    path.write_text("[security]\nrequire_token = true\n" + BASE)
    config = parse_config(path.read_text())
    assert listener_settings(config, path).local_token is None
    assert not (tmp_path / TOKEN_FILE_NAME).exists()
    tend_files(path, config)
    read = listener_settings(config, path).local_token
    assert read is not None
    assert read.reveal() == read_token(tmp_path / TOKEN_FILE_NAME)
