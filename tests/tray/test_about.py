"""About TrayProxy tells what a person asks About for: the name and version, where it listens
(the main port and each target's own port) and where its config file and logs are, not the
status line again (which the menu's first line and the tooltip already show).

In-process on pystray's dummy backend, with a real controller and proxy from a config file;
the notification is read from the log line every notification leaves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from background import free_port

from desktop import __version__
from desktop.controller import ConfigBinding, ProxyController
from desktop.tray.app import TrayApp
from desktop.tray.menu import status_line


def notified(caplog: pytest.LogCaptureFixture) -> str:
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("notification: ")]
    return message.removeprefix("notification: ")


def test_about_names_version_addresses_and_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        'active = "local"\n[listen]\nhosts = ["127.0.0.1"]\nport = 0\n'
        '[targets.local]\nurl = "http://127.0.0.1:9"\n'
        f'[targets.claude]\nurl = "http://127.0.0.1:9"\nport = {own}\n'
    )
    log_dir = tmp_path / "log"
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        status = controller.start()
        app = TrayApp(controller, log_dir=log_dir)
        with caplog.at_level(logging.INFO, logger="trayproxy.tray"):
            app.act("about")
        about = notified(caplog)
        main = status.local_url
        assert main is not None
        assert about.splitlines() == [
            f"TrayProxy {__version__}",
            f"Listens on {main.removeprefix('http://')} (local); claude on 127.0.0.1:{own}",
            f"Config: {config}",
            f"Logs: {log_dir}",
        ]
        assert status_line(controller.status) not in about

        controller.stop()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="trayproxy.tray"):
            app.act("about")
        assert notified(caplog).splitlines()[1] == "Not listening (stopped)"
    finally:
        controller.close(grace_s=0.5)
