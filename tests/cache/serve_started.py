"""``trayproxy serve`` for the recorded-answers tests: the real CLI in a subprocess, on a free
port of 127.0.0.1, waited for until it answers; its access lines read from its stderr."""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from background import free_port, wait_until
from cli_process import ServeProcess
from listen_helpers import proxy_answers

__all__ = ["Serves", "Serving"]

# Starting serve (a Python process with our imports) on a loaded two-core machine.
START_TIMEOUT_S = 20.0
# An access line is written once the answer has ended, read by another thread.
ACCESS_LINE_TIMEOUT_S = 10.0
CACHE_FIELD = re.compile(r" cache=(\S+)")


@dataclass
class Serving:
    """A ``trayproxy serve`` answering at ``url``."""

    process: ServeProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_lines(self) -> list[str]:
        """Each request's access line, but the health checks that told it was up."""
        lines = self.process.lines_with("trayproxy.access")
        return [line.rstrip("\n") for line in lines if "/__trayproxy/health" not in line]

    def cache_outcomes(self, count: int) -> list[str]:
        """The ``cache=`` of each access line, once there are ``count`` of them."""
        wait_until(lambda: len(self.access_lines()) >= count, timeout_s=ACCESS_LINE_TIMEOUT_S)
        lines = self.access_lines()
        assert len(lines) == count, "\n".join(lines)
        return [match.group(1) if (match := CACHE_FIELD.search(line)) else "" for line in lines]


class Serves:
    """Starts serves; ``stop_all`` stops those still running (each must exit cleanly)."""

    def __init__(self) -> None:
        self._started: list[ServeProcess] = []

    def start(
        self, config: Path | None, *flags: str, env: Mapping[str, str] | None = None, wait: bool = True
    ) -> Serving:
        """``serve [--config CONFIG] --port FREE --host 127.0.0.1 FLAGS``, ``env`` added to
        this process's environment, once it answers (at once with ``wait`` False)."""
        port = free_port()
        process = ServeProcess(config, "--port", str(port), "--host", "127.0.0.1", *flags, env=env)
        self._started.append(process)
        if wait:
            self.wait(Serving(process, port))
        return Serving(process, port)

    @staticmethod
    def wait(serving: Serving) -> None:
        """Until ``serving`` answers; it must not have stopped."""
        process, port = serving.process, serving.port
        wait_until(
            lambda: process.proc.poll() is not None or proxy_answers(port, timeout_s=1.0),
            timeout_s=START_TIMEOUT_S,
        )
        assert process.proc.poll() is None, f"serve stopped:\n{process.stderr}"
        assert proxy_answers(port, timeout_s=1.0), f"serve does not answer:\n{process.stderr}"

    def stop_all(self) -> None:
        for process in self._started:
            if process.proc.poll() is None:
                process.stop()
            else:  # stopped by its test already, or crashed (its test said why)
                with suppress(AssertionError):
                    process.stop()
