"""``trayproxy serve`` for the routes tests: started once per module with a scrubbed
environment and a home of its own, its access lines read from its stderr.

A module-scoped serve starts before any test's own ``clean_environ`` runs, so it gets the same
scrubbed environment here, explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from background import free_port, wait_until
from cli_process import ServeProcess
from isolated_home import home_environ, is_scrubbed
from listen_helpers import proxy_answers

# Starting serve (a Python process with our imports) on a loaded two-core machine.
SERVE_START_TIMEOUT_S = 20.0
# An access line is written once the answer has ended; the log reader is another thread.
ACCESS_LINE_TIMEOUT_S = 10.0


@dataclass
class RunningServe:
    """``trayproxy serve`` listening on 127.0.0.1:``port``."""

    process: ServeProcess
    port: int
    config: Path  # the file it follows: a test may edit it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_line(self, request_text: str) -> str:
        """The one access line for the request written ``"METHOD /raw/path"`` (quotes included
        in ``request_text``), once it is logged."""
        found = wait_until(
            lambda: bool(self.process.lines_with(request_text)), timeout_s=ACCESS_LINE_TIMEOUT_S
        )
        assert found, f"no access line with {request_text}:\n{self.process.stderr}"
        lines = self.process.lines_with(request_text)
        assert len(lines) == 1, lines
        return lines[0].rstrip("\n")


# start_serve(config_text, env)
StartServe = Callable[[str, Mapping[str, str]], RunningServe]


class ServeStarter:
    """Starts serves in folders of ``tmp_path_factory``; ``stop_all`` stops those still running."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._folders = tmp_path_factory
        self._started: list[ServeProcess] = []

    def start(self, config_text: str, env: Mapping[str, str]) -> RunningServe:
        """Serve ``config_text`` (``{port}`` in it filled with a free port), ``env`` added to
        the scrubbed environment, and wait until it answers."""
        folder = self._folders.mktemp("serve")
        home = folder / "home"
        home.mkdir()
        port = free_port()
        config = folder / "config.toml"
        config.write_text(config_text.replace("{port}", str(port)))
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if is_scrubbed(name):
                    patch.delenv(name)
            serve = ServeProcess(
                config,
                env={**home_environ(home), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", **env},
            )
        self._started.append(serve)
        wait_until(
            lambda: serve.proc.poll() is not None or proxy_answers(port, timeout_s=1.0),
            timeout_s=SERVE_START_TIMEOUT_S,
        )
        assert serve.proc.poll() is None, f"serve stopped:\n{serve.stderr}"
        assert proxy_answers(port, timeout_s=1.0), f"serve does not answer:\n{serve.stderr}"
        return RunningServe(serve, port, config)

    def stop_all(self) -> None:
        """Stop each serve (SIGTERM, a clean exit asserted); one that had already exited is
        only reaped, its pipe closed: the test that started it has said why it ended."""
        for serve in self._started:
            if serve.proc.poll() is None:
                serve.stop()
            else:
                with suppress(AssertionError):
                    serve.stop()
