"""Helpers for tests that move listeners: another program holding a port, asking the OS
whether something listens on a port without connecting to it, and asking whether a TrayProxy
answers there."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["PortHolder", "can_bind", "is_listening", "proxy_answers"]

# Starting a Python process on a loaded two-core machine.
HOLDER_START_TIMEOUT_S = 20.0

_HOLD = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "s.listen()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"  # until the test closes our stdin
)


class PortHolder:
    """``with PortHolder(port) as holder:`` another process listens on 127.0.0.1:``port``
    (``holder.pid``) until the block ends."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the port holder did not start on {host}:{port}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(HOLDER_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(HOLDER_START_TIMEOUT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> PortHolder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port``, read from /proc/net/tcp where there is one:
    a probe connection accepted just as a listener closes leaks on the proxy's loop."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError:
            return False
        return True
    wanted = socket.inet_aton(host)[::-1].hex().upper()  # little-endian, as the kernel prints it
    for line in table.read_text().splitlines()[1:]:
        fields = line.split()
        address, _, hex_port = fields[1].partition(":")
        if fields[3] == "0A" and int(hex_port, 16) == port and address in (wanted, "00000000"):
            return True
    return False


def can_bind(host: str) -> bool:
    """Whether this machine lets a socket bind ``host`` (127.0.0.2 works on Linux, not macOS)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def proxy_answers(port: int, host: str = "127.0.0.1", *, timeout_s: float) -> bool:
    """True when a TrayProxy answers its health check on ``host:port``; False while nothing
    listens there yet (or something else does)."""
    where = f"[{host}]" if ":" in host else host
    try:
        response = httpx.get(f"http://{where}:{port}/__trayproxy/health", trust_env=False, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
