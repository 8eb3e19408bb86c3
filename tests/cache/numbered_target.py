"""A scripted LLM target for the recorded-answers tests, as the openai and anthropic SDKs see
one: ``POST .../chat/completions`` and ``.../messages``, whole or streamed (``"stream": true``).

Every answer carries its number (``answer 3 to "PROMPT"``, ``chatcmpl-3``, ``x-request-id:
req_3``), so a fresh answer never equals an earlier one: a client that gets the same bytes
again got them from the recording. A whole answer is gzip-compressed when the request accepts
gzip (so ``Accept-Encoding`` changes the bytes, as real services do); a stream is written one
event at a time with a pause between, each event its own HTTP chunk. ``failing`` set to a
status answers that status with an error instead (a fallback is then tried). ``received``
lists every request that arrived, failed ones too; ``written`` each answer's pieces.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web import ContentCoding

__all__ = ["EVENT_GAP_S", "NumberedTarget", "Received"]

# Between two events of a stream: long enough that each leaves as its own HTTP chunk.
EVENT_GAP_S = 0.02


@dataclass(frozen=True)
class Received:
    """One request as the target received it."""

    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def prompt(self) -> str:
        """The text of the request's last message."""
        content = json.loads(self.body)["messages"][-1]["content"]
        return content if isinstance(content, str) else json.dumps(content)


@dataclass
class NumberedTarget:
    """The target ``name``; serve ``app()`` on 127.0.0.1."""

    name: str
    failing: int | None = None
    received: list[Received] = field(default_factory=list)
    written: list[list[bytes]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def prompts(self) -> list[str]:
        """The prompt of each request received, in order."""
        return [received.prompt() for received in self.received]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            request.path,
            tuple((key.decode("latin-1"), value.decode("latin-1")) for key, value in request.raw_headers),
            await request.read(),
        )
        self.received.append(received)
        if self.failing is not None:
            error = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": f"{self.name} is busy"},
            }
            return web.json_response(error, status=self.failing)
        number = len(self.received)
        document = json.loads(received.body)
        text = f"answer {number} from {self.name} to {json.dumps(received.prompt())}"
        model = document.get("model", "")
        anthropic = request.path.endswith("/messages")
        headers = {"x-request-id": f"req_{number}"}
        if document.get("stream") is True:
            events = _message_events(number, model, text) if anthropic else _chat_events(number, model, text)
            response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
            await response.prepare(request)
            for event in events:
                await response.write(event)
                await asyncio.sleep(EVENT_GAP_S)
            await response.write_eof()
            self.written.append(events)
            return response
        answer = _message(number, model, text) if anthropic else _chat_completion(number, model, text)
        whole = web.Response(
            body=json.dumps(answer).encode(), content_type="application/json", headers=headers
        )
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            whole.enable_compression(ContentCoding.gzip)
        self.written.append([whole.body if isinstance(whole.body, bytes) else b""])
        return whole


def _chat_completion(number: int, model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": 1_780_000_000 + number,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def _chat_events(number: int, model: str, text: str) -> list[bytes]:
    """A chat completion streamed: the role, the text in words, the finish, ``[DONE]``."""

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        document = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion.chunk",
            "created": 1_780_000_000 + number,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(document)}\n\n".encode()

    words = text.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])]
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]


def _message(number: int, model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }


def _message_events(number: int, model: str, text: str) -> list[bytes]:
    """A Messages answer as Anthropic streams it: the message, one text block in words, the stop."""
    start = {**_message(number, model, text), "content": [], "stop_reason": None}
    words = text.split(" ")
    pieces = [words[0], *(" " + word for word in words[1:])]
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        },
        {"type": "message_stop"},
    ]
    return [f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events]
