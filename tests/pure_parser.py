"""TrayProxy on aiohttp's pure-Python HTTP parser, for claims that must hold under both parsers.

aiohttp picks its request parser once, when it is imported: the C one (llhttp) unless
``AIOHTTP_NO_EXTENSIONS`` is set or the platform has no C extension. The test process already
runs the C one, so the pure-Python one runs in a `trayproxy serve` subprocess started with that
variable; the same raw bytes go to both and must get the same answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from background import wait_until
from cli_process import EXIT_TIMEOUT_S, REPO
from isolated_home import home_environ, is_scrubbed
from listen_helpers import proxy_answers

__all__ = ["PARSERS", "PurePythonParserProxy", "check_parser_is_pure_python", "pure_parser_environ"]

# The two request parsers: "llhttp" runs in the test's own process, "python" in a subprocess.
PARSERS = ("llhttp", "python")
# Bound on `trayproxy serve` starting to answer (well under a second when the machine is idle).
SERVE_START_TIMEOUT_S = 20.0
# Bound on one health-check request while waiting for it.
HEALTH_TIMEOUT_S = 1.0


def pure_parser_environ(home: Path) -> dict[str, str]:
    """This process's environment, scrubbed as conftest.py scrubs each test's, with ``home``
    for HOME and the XDG dirs, and aiohttp told to use its pure-Python parser."""
    environ = {name: value for name, value in os.environ.items() if not is_scrubbed(name)}
    environ.update(home_environ(home))
    environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    environ["AIOHTTP_NO_EXTENSIONS"] = "1"
    return environ


def check_parser_is_pure_python(environ: dict[str, str]) -> None:
    """Fail unless ``environ`` really gives aiohttp's pure-Python request parser: otherwise a
    "both parsers" test would quietly test the C one twice."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import aiohttp.http_parser as p; print(p.HttpRequestParser is p.HttpRequestParserPy)",
        ],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=True,
    )
    assert probe.stdout.strip() == "True", "AIOHTTP_NO_EXTENSIONS no longer selects the pure-Python parser"


class PurePythonParserProxy:
    """``trayproxy serve --target TARGET --port PORT [flags]`` on the pure-Python parser, its
    stderr kept in ``home``/serve-PORT.stderr."""

    def __init__(self, home: Path, target: str, port: int, flags: Iterable[str] = ()) -> None:
        self.port = port
        self._stderr_path = home / f"serve-{port}.stderr"
        args = ["--config", str(home / "config.toml"), "--target", target, "--port", str(port), *flags]
        with self._stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "desktop", "serve", *args],
                cwd=REPO,
                env=pure_parser_environ(home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

        def answers() -> bool:
            return proxy_answers(port, timeout_s=HEALTH_TIMEOUT_S)

        if not wait_until(answers, timeout_s=SERVE_START_TIMEOUT_S):
            self.stop()
            raise AssertionError(f"serve did not answer on port {port}:\n{self.stderr}")

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not left within EXIT_TIMEOUT_S."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(EXIT_TIMEOUT_S)
