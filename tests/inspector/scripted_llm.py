"""A scripted LLM target and a TrayProxy in front of it whose every request the inspector's
store keeps (the store's read_back: readback.facts_of), all on 127.0.0.1 in the test's loop.

The target answers each path with the reply a test set for it: pieces of bytes written one by
one (a number in between is a pause, in seconds: the time before the first token), with the
status and headers given. The proxy adds a configured key no SDK or shape knows
(CONFIGURED_KEY); the SDKs send CLIENT_KEY as theirs. Neither may show in what the inspector
gives out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from netservers import LoopbackResolver

from desktop.config.model import ProxySettings, Secret, Target
from desktop.engine.service import ProxyService
from desktop.inspector.readback import facts_of
from desktop.inspector.store import Exchange, InspectorStore

__all__ = ["CLIENT_KEY", "CONFIGURED_KEY", "Inspected", "Reply", "inspected", "sse_event"]

# Keys of no known shape, so only the inspector's masking of registered secrets and of what
# the client sent can hide them (redaction.py's shapes would mask an sk-... anyway).
CONFIGURED_KEY = "cfg9f8e7d6c5b4a3f2e1d0c9b8a"
CLIENT_KEY = "client0a1b2c3d4e5f6a7b8c9d0e"


def sse_event(kind: str | None, data: dict[str, Any] | str) -> bytes:
    """One SSE event (``event:`` line when ``kind``), its data JSON unless given as text."""
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {kind}\n" if kind else "").encode() + f"data: {text}\n\n".encode()


@dataclass
class Reply:
    pieces: list[bytes | float]  # bytes are written as they are, a float is a pause in seconds
    content_type: str = "text/event-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Inspected:
    store: InspectorStore
    service: ProxyService
    replies: dict[str, Reply]
    received: list[web.Request] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    async def settled(self, count: int = 1, timeout_s: float = 5.0) -> Exchange:
        """The newest exchange, once ``count`` have ended and been read back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            held = self.store.exchanges()
            if len(held) >= count and all(
                e.done and (e.facts is not None or not e.response_bytes) for e in held
            ):
                return held[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"exchanges not settled: {self.store.exchanges()}")


@pytest.fixture
async def inspected(aiohttp_server: Any) -> AsyncIterator[Inspected]:
    replies: dict[str, Reply] = {}
    received: list[web.Request] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        received.append(request)
        reply = replies[request.path]
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers}
        )
        await response.prepare(request)
        for piece in reply.pieces:
            if isinstance(piece, float):
                await asyncio.sleep(piece)
            else:
                await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    target = Target(
        url=str(server.make_url("")),
        name="scripted",
        add_headers=(("Authorization", Secret(f"Bearer {CONFIGURED_KEY}")),),
    )
    store = InspectorStore(read_back=facts_of)
    service = ProxyService(
        ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=2.0),
        target,
        resolver=LoopbackResolver(),
        tap=store,
    )
    await service.start()
    try:
        yield Inspected(store, service, replies, received)
    finally:
        await service.stop(grace_s=0.5)
