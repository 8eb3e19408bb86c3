"""Secrets inside URLs a person types or writes never come back out of TrayProxy.

A target or proxy URL can carry a key as a query parameter (``?key=...``, some gateways take
it that way) or a password as ``user:password@``. Target URLs may carry neither (the model
rejects them), but the message saying so used to quote the URL whole on stderr, and
``config show`` printed a proxy's password. Each canary below must not appear anywhere.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from background import free_port, wait_until
from cli_process import run_cli
from upstreams import dead_port

from desktop.config.model import ProxySettings, Target
from desktop.controller import ProxyController, ProxyStatus
from desktop.redaction import redact_text

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


def test_the_tray_status_and_its_notices_mask_a_key_in_the_target_urls_path() -> None:
    """The tray shows the target (menu, tooltip, About) and its trouble (a notification when it
    cannot be reached) from the controller's status, which no log handler redacts: a key
    written into the target URL's path is masked there too, for a target named by its URL
    (``serve --target``) and for a named one whose URL is shown."""
    key = "sk-proj-" + secrets.token_hex(20)
    port = dead_port()
    url = f"http://127.0.0.1:{port}/gw/{key}"
    shown = f"http://127.0.0.1:{port}/gw/sk-***"
    snapshots: list[ProxyStatus] = []
    controller = ProxyController(ProxySettings(hosts=("127.0.0.1",), port=0), Target(url=url, name=url))
    controller.add_listener(snapshots.append)
    status = controller.start()
    try:
        assert (status.target_name, status.target_url) == (shown, shown)
        answer = httpx.get(f"{status.local_url}/v1/models", timeout=10, trust_env=False)
        assert answer.status_code == 502
        assert wait_until(lambda: controller.status.condition is not None, timeout_s=10)
        condition = controller.status.condition
        assert condition is not None
        assert condition.kind == "unreachable"
        assert shown in condition.message
        controller.set_target(Target(url=url, name="gateway"))
        assert (controller.status.target_name, controller.status.target_url) == ("gateway", shown)
    finally:
        controller.stop()
    body = key.removeprefix("sk-proj-")
    for snapshot in snapshots:
        assert body not in repr(snapshot)
    assert body not in answer.text
