"""Listen addresses: how one is written, and in plain words why one could not be opened.

A port that is taken may be held by another TrayProxy: it is asked for the health document
every TrayProxy answers at HEALTH_PATH, so the message can say "already running" instead of
"choose another port".
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterable

from desktop.routing import RESERVED_PATH

__all__ = ["HEALTH_PATH", "RESERVED_PREFIX", "ListenError", "host_port", "listen_error", "where"]

# Paths under this prefix are answered by the proxy and never forwarded.
RESERVED_PREFIX = RESERVED_PATH + "/"
HEALTH_PATH = RESERVED_PREFIX + "health"
# How long to wait for whoever holds our port to say whether it is a TrayProxy.
PROBE_TIMEOUT_S = 1.0


class ListenError(Exception):
    """The listener could not be opened; the message says why in plain words. ``port_taken``:
    another program (not a TrayProxy) holds the port, so choosing another one is the way out."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:8000``, or ``[::1]:8000``: an address as URLs and people write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def where(addresses: Iterable[tuple[str, int]]) -> str:
    """``127.0.0.1:8000, [::1]:8000``: the addresses listened on, for log lines and messages."""
    return ", ".join(host_port(host, port) for host, port in addresses)


async def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    where = host_port(host, port)
    if exc.errno == errno.EADDRINUSE:
        if await _is_trayproxy(host, port):
            return ListenError(f"TrayProxy is already running on {where}")
        return ListenError(
            f"Port {port} on {host} is already in use by another program; choose another port", port_taken=True
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ListenError(f"Not allowed to listen on {where} (ports below 1024 need admin rights)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{host} is not an address of this machine")
    return ListenError(f"Cannot listen on {where}: {exc.strerror or exc}")


async def _is_trayproxy(host: str, port: int) -> bool:
    """Ask whoever holds the port for our health document (raw HTTP, no client session)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                hostname = f"[{host}]" if ":" in host else host
                writer.write(
                    f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: {hostname}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = await reader.read(4096)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return b'"app": "trayproxy"' in data
