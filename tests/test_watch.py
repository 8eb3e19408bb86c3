"""The thread following the config file: it notices a save within a poll or two, whatever else
sits beside the file (found by the attacker trial: a FIFO named like the token file blocked it
for good, so later edits were never applied and nothing was logged)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from desktop.controller.watch import FileWatch

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero are POSIX")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_beside_the_config_does_not_stop_the_watch(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text("active = 'a'\n")
    odd = tmp_path / "local-token"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    changed = threading.Event()
    watch = FileWatch((config, odd), lambda saved: changed.set() if saved else None, poll_s=0.05)
    watch.start()
    try:
        config.write_text("active = 'b'\n# saved again\n")
        assert changed.wait(5.0), "the save was not noticed"
    finally:
        watch.close(2.0)
