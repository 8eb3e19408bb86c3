"""WebSocket clients for tests: a ``websockets`` client set up for loopback tests, and a frame
reader for tests that speak the protocol on a raw socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

# Bound on the opening handshake: a proxy that hangs fails the test instead of stalling it.
OPEN_TIMEOUT_S = 10.0


@asynccontextmanager
async def ws_client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    """A ``websockets`` client with no keepalive pings of its own and no environment proxy."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", OPEN_TIMEOUT_S)
    async with connect(url, **kwargs) as ws:
        yield ws


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the stream: (opcode, payload), unmasking a masked one."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if head[1] & 0x80 else b""
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head[0] & 0x0F, payload
