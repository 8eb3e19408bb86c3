"""The real CLI as a subprocess: one command run to its end (``run_cli``), or ``trayproxy
serve`` kept running while a test follows what it prints (``ServeProcess``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

# A clean stop takes well under a second; a loaded CI machine gets a wide margin.
STOP_TIMEOUT_S = 15.0
# Bound on a command that exits by itself: a Python start with our imports on a busy machine.
EXIT_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """``python -m desktop ARGS`` from the checkout, to its end; ``env`` replaces the
    environment (default: this process's, as it is now). From a ``cwd`` other than the
    checkout, the checkout goes first on PYTHONPATH: it is still the code that runs."""
    environ = dict(env if env is not None else os.environ)
    if cwd != REPO:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "desktop", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=EXIT_TIMEOUT_S,
        env=environ,
    )


class ServeProcess:
    """``trayproxy serve --config PATH [flags]`` with its stderr collected as it is written;
    ``env`` is added to this process's environment. ``config`` None: no ``--config``, so serve
    reads (or on a first run, writes) the file at its default place in the home."""

    def __init__(self, config: Path | None, *flags: str, env: Mapping[str, str] | None = None) -> None:
        chosen = ["--config", str(config)] if config is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desktop", "serve", *chosen, *flags],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="serve-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._lines)

    def lines_with(self, text: str) -> list[str]:
        return [line for line in list(self._lines) if text in line]

    def stop(self) -> str:
        """SIGTERM, wait for a clean exit, and return everything it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
            self._reader.join(STOP_TIMEOUT_S)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        assert self.proc.returncode == 0, self.stderr
        return self.stderr
