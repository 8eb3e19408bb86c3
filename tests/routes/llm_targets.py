"""Test targets for routes and failover: a named LLM API that answers in the shapes the SDKs
parse, and a target whose every answer is a fault scripted by the path it is asked on.

Both are real aiohttp apps (run them with ``background.BackgroundServer``; ``trayproxy serve``
runs in another process) and record what they received, so a test can tell which target a
request reached, with which key, body and path, and when.

Fault scripts: a target's URL is ``{faults.url}/{case}/{steps}``, so every request the proxy
sends to it arrives as ``/{case}/{steps}/...``; the n-th request of a case plays step n of
``steps`` (dot-separated; the last one repeats). Steps:

=========== ==================================================================================
``ok``      200, a small JSON answer naming the case
``429-raN`` 429 with ``Retry-After: N`` and a JSON error
``429-date`` 429 with ``Retry-After`` as an HTTP-date one second ahead (RFC 9110 §10.2.3)
``503``     503 (also ``500``, ``502``, ``529``: any three digits) with a JSON error
``reset``   the connection is reset (RST) before any byte of an answer
``stall``   no answer until the proxy gives up (give the target a small ``read_timeout``)
``sseerr``  200 ``text/event-stream`` whose first event is ``event: error`` (Anthropic's
            mid-stream ``overloaded_error``), then the end
``pingerr`` the same after an SSE comment line (``: keep-alive``), as gateways that send
            comments while they wait (OpenRouter's ``: OPENROUTER PROCESSING``)
``empty``   200 with an empty body
``cut40``   200 ``text/event-stream`` of 60 events, the connection cut after the 40th: no
            ``[DONE]``, no final chunk
=========== ==================================================================================
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

__all__ = [
    "CUT_AFTER_EVENTS",
    "MESSAGE_PIECES",
    "STREAM_EVENTS",
    "Received",
    "TargetLog",
    "fault_app",
    "llm_app",
]

# How a streamed Messages answer splits ``hello from NAME`` (the last delta is `` NAME``).
MESSAGE_PIECES = ("hello", " from")
# The cut stream: 60 events announced, the connection dropped after 40 (issue 14's matrix).
STREAM_EVENTS = 60
CUT_AFTER_EVENTS = 40
# How long a stalled answer waits at most: far beyond any read_timeout the tests give the
# stalling target, and short enough that stopping the server never waits on it for long.
STALL_S = 20.0
# The pause before a cut: lets the 40 events leave the server's buffer before the reset.
FLUSH_BEFORE_CUT_S = 0.1


@dataclass(frozen=True)
class Received:
    """One request as a test target received it."""

    method: str
    raw_path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float  # time.monotonic() when it arrived
    step: str = ""  # the fault step it was answered with (fault_app only)
    answer: bytes = b""  # the body the target answered with (llm_app's LLM answers only)

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class TargetLog:
    """What one test target received, shared with the test's thread."""

    name: str
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def tagged(self, case: str) -> list[Received]:
        """The requests a test marked with ``X-Test-Case: case``."""
        with self._lock:
            return [r for r in self.requests if r.header("X-Test-Case") == [case]]

    def under(self, prefix: str) -> list[Received]:
        """The requests whose raw path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.raw_path.startswith(prefix)]


LOG = web.AppKey("log", TargetLog)


async def _receive(request: web.Request, *, step: str = "") -> Received:
    body = await request.read()
    return Received(
        method=request.method,
        raw_path=request.raw_path,
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers),
        body=body,
        at=time.monotonic(),
        step=step,
    )


def _document_of(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _model_of(body: bytes) -> str:
    model = _document_of(body).get("model")
    return model if isinstance(model, str) else ""


def _chat_completion(name: str, model: str) -> dict[str, Any]:
    """The smallest OpenAI chat completion the openai SDK parses, saying who answered."""
    return {
        "id": f"chatcmpl-{name}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello from {name}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


def _message(name: str, model: str) -> dict[str, Any]:
    """An Anthropic Messages answer, saying who answered."""
    return {
        "id": f"msg_{name}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": f"hello from {name}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 3},
    }


def _message_events(name: str, model: str) -> list[bytes]:
    """An Anthropic Messages answer as the server-sent events the anthropic SDK parses (the
    message, its one text block, the deltas, the stop): ``hello from NAME`` in three deltas."""
    start = {**_message(name, model), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 1, "output_tokens": 0}
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in (*MESSAGE_PIECES, f" {name}")
    ]
    events = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *deltas,
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(deltas)},
        },
        {"type": "message_stop"},
    ]
    return [f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events]


def llm_app(name: str, log: TargetLog | None = None) -> web.Application:
    """A target called ``name``: ``POST .../chat/completions`` and ``.../messages`` answer as
    OpenAI and Anthropic do (model as received, text ``hello from NAME``; ``.../messages`` with
    ``"stream": true`` as Anthropic's event stream, each event written on its own);
    ``GET .../redirect?to=`` answers 302 to ``to`` with ``{self}`` replaced by this target's
    own ``http://host:port``; a WebSocket upgrade on any path first sends ``{"target", "path",
    "authorization"}`` then echoes; anything else answers a JSON record of what it received."""
    app = web.Application(client_max_size=0)
    app[LOG] = log or TargetLog(name)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request)
        received = await _receive(request)
        path = request.path
        if path.endswith("/redirect"):
            request.app[LOG].add(received)
            location = request.query["to"].replace("{self}", f"http://{request.host}")
            return web.Response(status=302, headers={"Location": location})
        if path.endswith("/messages") and _document_of(received.body).get("stream") is True:
            return await _stream_events(request, received, _message_events(name, _model_of(received.body)))
        if path.endswith("/chat/completions"):
            document = _chat_completion(name, _model_of(received.body))
        elif path.endswith("/messages"):
            document = _message(name, _model_of(received.body))
        else:
            document = {"target": name, "method": received.method, "raw_path": received.raw_path}
        answer = json.dumps(document).encode()
        request.app[LOG].add(Received(**{**received.__dict__, "answer": answer}))
        return web.Response(body=answer, content_type="application/json")

    async def _stream_events(
        request: web.Request, received: Received, events: list[bytes]
    ) -> web.StreamResponse:
        request.app[LOG].add(Received(**{**received.__dict__, "answer": b"".join(events)}))
        response = await _sse_start(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    async def _websocket(request: web.Request) -> web.WebSocketResponse:
        request.app[LOG].add(await _receive(request))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = {
            "target": name,
            "path": request.raw_path,
            "authorization": request.headers.getall("Authorization", []),
        }
        await ws.send_str(json.dumps(hello))
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def fault_app(log: TargetLog | None = None) -> web.Application:
    """The scripted faults of the module docstring, one step per request of a case."""
    app = web.Application(client_max_size=0)
    app[LOG] = log or TargetLog("faults")
    played: dict[str, int] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        case, _, rest = request.raw_path.lstrip("/").partition("/")
        steps = rest.partition("/")[0].split(".")
        index = played.get(case, 0)
        played[case] = index + 1
        step = steps[min(index, len(steps) - 1)]
        request.app[LOG].add(await _receive(request, step=step))
        return await _play(request, case, step)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _error_body(status: int) -> bytes:
    return json.dumps({"type": "error", "error": {"type": f"status_{status}", "message": "scripted"}}).encode()


async def _play(request: web.Request, case: str, step: str) -> web.StreamResponse:
    if step == "ok":
        return web.json_response({"served_by": "faults", "case": case})
    if step.startswith("429-ra"):
        return web.Response(
            status=429,
            body=_error_body(429),
            content_type="application/json",
            headers={"Retry-After": step.removeprefix("429-ra")},
        )
    if step.isdigit() and len(step) == 3:
        return web.Response(status=int(step), body=_error_body(int(step)), content_type="application/json")
    if step == "reset":
        _reset(request)
        return web.Response()  # never sent: the connection is gone
    if step == "stall":
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline and request.transport is not None:
            if request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return web.Response(text="too late")
    if step == "empty":
        return web.Response(status=200, body=b"", content_type="application/json")
    if step == "pingerr":
        response = await _sse_start(request)
        await response.write(b": keep-alive\n\n")
        await response.write(
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            b'"message": "Overloaded"}}\n\n'
        )
        await response.write_eof()
        return response
    if step == "429-date":
        return web.Response(
            status=429,
            body=_error_body(429),
            content_type="application/json",
            headers={"Retry-After": formatdate(time.time() + 1, usegmt=True)},
        )
    if step == "sseerr":
        response = await _sse_start(request)
        await response.write(
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
            b'"message": "Overloaded"}}\n\n'
        )
        await response.write_eof()
        return response
    if step == "cut40":
        response = await _sse_start(request)
        for index in range(CUT_AFTER_EVENTS):
            await response.write(f"data: {json.dumps({'i': index, 'of': STREAM_EVENTS})}\n\n".encode())
        await asyncio.sleep(FLUSH_BEFORE_CUT_S)
        _reset(request)
        return response
    raise ValueError(f"unknown fault step {step!r}")


async def _sse_start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed upstream or a middlebox
    does, rather than a clean FIN."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
