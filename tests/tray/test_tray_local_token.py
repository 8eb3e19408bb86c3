"""The tray's Copy environment with ``require_token`` on: the lines carry the local token.

Someone who turned on ``[security] require_token`` picks Copy environment ▸ POSIX (or
PowerShell) and pastes: their SDK then sends the token as its key, which is what the proxy asks
for. The copy goes through the real clipboard code path to a stand-in ``xclip`` on PATH that
keeps what it was given; the tray runs in-process on pystray's dummy backend with a real
controller and proxy. The token is in the copied text and nowhere in the log.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from desktop.controller import ConfigBinding, ProxyController
from desktop.tray.app import TrayApp

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the stand-in clipboard tool is a sh script")


def write_config(path: Path, *, require_token: bool) -> None:
    path.write_text(
        '[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
        f"[security]\nrequire_token = {'true' if require_token else 'false'}\n"
        '[targets.local]\nurl = "http://127.0.0.1:9"\n'
    )


@pytest.mark.parametrize(
    ("shell", "line"),
    [("posix", "export OPENAI_API_KEY={token}\n"), ("powershell", '$env:ANTHROPIC_API_KEY = "{token}"\n')],
)
def test_copy_environment_carries_the_local_token_and_never_logs_it(
    tmp_path: Path, clipboard: Path, caplog: pytest.LogCaptureFixture, shell: str, line: str
) -> None:
    config = tmp_path / "config.toml"
    write_config(config, require_token=True)
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        controller.start()
        app = TrayApp(controller, log_dir=tmp_path / "log")
        with caplog.at_level(logging.DEBUG):
            app.act("copy-env", shell)
        assert controller.status.local_token is not None
        token = controller.status.local_token.reveal()
    finally:
        controller.close(grace_s=0.5)
    copied = clipboard.read_text()
    assert line.format(token=token) in copied
    assert "copied the environment lines" in caplog.text
    assert token not in caplog.text


def test_copy_environment_without_require_token_keeps_the_placeholder(tmp_path: Path, clipboard: Path) -> None:
    """Off, a keyless target's lines carry no key at all, as before."""
    config = tmp_path / "config.toml"
    write_config(config, require_token=False)
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        controller.start()
        TrayApp(controller, log_dir=tmp_path / "log").act("copy-env", "posix")
    finally:
        controller.close(grace_s=0.5)
    copied = clipboard.read_text()
    assert "export OPENAI_BASE_URL=" in copied
    assert "API_KEY" not in copied
