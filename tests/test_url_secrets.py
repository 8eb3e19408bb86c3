"""Secrets inside URLs a person types or writes never come back out of TrayProxy.

A target or proxy URL can carry a key as a query parameter (``?key=...``, some gateways take
it that way) or a password as ``user:password@``. Target URLs may carry neither (the model
rejects them), but the message saying so used to quote the URL whole on stderr, and
``config show`` printed a proxy's password. Each canary below must not appear anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from background import free_port
from cli_process import run_cli

from desktop.engine.redact import redact_text

CANARY = "tpcanary-0f3e9a7c51"




@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:1/base?key={CANARY}",
        f"http://127.0.0.1:1/base?api_key={CANARY}",
        f"http://user:{CANARY}@127.0.0.1:1/base",
        f"ftp://user:{CANARY}@127.0.0.1:1/base?key={CANARY}",
    ],
    ids=["query-key", "query-api_key", "userinfo", "bad-scheme"],
)
def test_serve_refuses_a_target_url_without_echoing_its_secret(url: str) -> None:
    result = run_cli("serve", "--target", url, "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.startswith("trayproxy serve: --target: ")
    assert CANARY not in result.stdout + result.stderr


def test_config_check_names_a_bad_url_without_its_password_or_key(tmp_path: Path) -> None:
    """The file's errors also become the tray's status line, which no log handler redacts."""
    path = tmp_path / "config.toml"
    path.write_text(f'[targets.gw]\nurl = "ftp://user:{CANARY}@gw.example/v1?key={CANARY}"\n')
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}:2:1: 'ftp://user:***@gw.example/v1?key=***' is not an http:// or https:// URL" in result.stderr
    assert CANARY not in result.stdout + result.stderr


def test_config_show_masks_a_proxy_password(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'proxy = "http://me:{CANARY}@proxy.example:3128"\n[targets.a]\nurl = "http://127.0.0.1:1"\n')
    result = run_cli("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert 'proxy = "http://me:***@proxy.example:3128"' in result.stdout
    assert CANARY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"https://me:{CANARY}@gw.example/v1", "https://me:***@gw.example/v1"),
        (f"proxy 'http://me:{CANARY}@p:3128' refused", "proxy 'http://me:***@p:3128' refused"),
        ("https://me@gw.example/a@b", "https://me@gw.example/a@b"),  # no password: nothing to mask
        ("listening on http://127.0.0.1:8000", "listening on http://127.0.0.1:8000"),
    ],
)
def test_log_lines_mask_the_password_of_a_url(text: str, masked: str) -> None:
    assert redact_text(text) == masked
