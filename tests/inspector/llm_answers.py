"""Answers of the four APIs as targets send them (../shared notes, "How LLM APIs stream"),
streamed with a pause of FIRST_TOKEN_DELAY_S before the first piece of output, and whole.

Each carries text, a tool call with JSON arguments and a usage the tests compare against."""

from __future__ import annotations

import json
from typing import Any

from scripted_llm import Reply, sse_event

FIRST_TOKEN_DELAY_S = 0.5

# --- OpenAI Chat Completions ------------------------------------------------------------------

CHAT_USAGE = {
    "prompt_tokens": 31,
    "completion_tokens": 12,
    "total_tokens": 43,
    "prompt_tokens_details": {"cached_tokens": 8},
}


def _chunk(delta: dict[str, Any] | None, *, finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-scripted",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return sse_event(None, body)


def _call(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


CHAT_STREAM = Reply(
    [
        _chunk({"role": "assistant", "content": ""}),  # the head of the answer: no output yet
        FIRST_TOKEN_DELAY_S,
        _chunk({"content": "Checking "}),
        _chunk({"content": "Paris… é"}),
        _chunk(_call(0, id="call_a", type="function", function={"name": "weather", "arguments": ""})),
        _chunk(_call(0, function={"arguments": '{"city": '})),
        _chunk(_call(0, function={"arguments": '"Paris", "days": 2}'})),
        _chunk({}, finish="tool_calls"),
        _chunk(None, usage=CHAT_USAGE),
        b"data: [DONE]\n\n",
    ]
)
CHAT_WHOLE = Reply(
    [
        json.dumps(
            {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-scripted-whole",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "Sunny.",
                            "tool_calls": [
                                {
                                    "id": "call_w",
                                    "type": "function",
                                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": CHAT_USAGE,
            }
        ).encode()
    ],
    content_type="application/json",
)

# --- Anthropic Messages -------------------------------------------------------------------------

MESSAGES_START = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-scripted",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 10},
}


def _messages_event(kind: str, **data: Any) -> bytes:
    return sse_event(kind, {"type": kind, **data})


MESSAGES_STREAM = Reply(
    [
        _messages_event("message_start", message=MESSAGES_START),
        _messages_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        b'event: ping\ndata: {"type": "ping"}\n\n',
        FIRST_TOKEN_DELAY_S,
        _messages_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Checking "}),
        _messages_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Paris… é"}),
        _messages_event("content_block_stop", index=0),
        _messages_event(
            "content_block_start",
            index=1,
            content_block={"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        ),
        _messages_event(
            "content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"city": '}
        ),
        _messages_event(
            "content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '"Paris"}'}
        ),
        _messages_event("content_block_stop", index=1),
        _messages_event(
            "message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage={"output_tokens": 42},
        ),
        _messages_event("message_stop"),
    ]
)
MESSAGE_WHOLE = Reply(
    [
        json.dumps(
            {
                **MESSAGES_START,
                "model": "claude-scripted-whole",
                "content": [
                    {"type": "text", "text": "Sunny."},
                    {"type": "tool_use", "id": "toolu_w", "name": "weather", "input": {"city": "Oslo"}},
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 25, "output_tokens": 42, "cache_read_input_tokens": 10},
            }
        ).encode()
    ],
    content_type="application/json",
)

# --- OpenAI Responses ---------------------------------------------------------------------------

RESPONSES_USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 12},
    "output_tokens": 8,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 38,
}
_MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Checking Paris.", "annotations": []}],
}
_CALL_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}


def _response(status: str, output: list[Any], usage: Any = None) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "gpt-scripted-responses",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def _responses_events(*events: tuple[str, dict[str, Any]] | float) -> list[bytes | float]:
    pieces: list[bytes | float] = []
    for number, event in enumerate(events):
        if isinstance(event, float):
            pieces.append(event)
        else:
            kind, data = event
            pieces.append(sse_event(kind, {"type": kind, "sequence_number": number, **data}))
    return pieces


RESPONSES_STREAM = Reply(
    _responses_events(
        ("response.created", {"response": _response("in_progress", [])}),
        ("response.output_item.added", {"output_index": 0, "item": {**_MESSAGE_ITEM, "content": []}}),
        (
            "response.content_part.added",
            {
                "output_index": 0,
                "content_index": 0,
                "item_id": "msg_1",
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
        FIRST_TOKEN_DELAY_S,
        (
            "response.output_text.delta",
            {"output_index": 0, "content_index": 0, "item_id": "msg_1", "delta": "Checking "},
        ),
        (
            "response.output_text.delta",
            {"output_index": 0, "content_index": 0, "item_id": "msg_1", "delta": "Paris."},
        ),
        ("response.output_item.done", {"output_index": 0, "item": _MESSAGE_ITEM}),
        ("response.output_item.added", {"output_index": 1, "item": {**_CALL_ITEM, "arguments": ""}}),
        (
            "response.function_call_arguments.delta",
            {"output_index": 1, "item_id": "fc_1", "delta": '{"city": '},
        ),
        (
            "response.function_call_arguments.delta",
            {"output_index": 1, "item_id": "fc_1", "delta": '"Paris"}'},
        ),
        ("response.output_item.done", {"output_index": 1, "item": _CALL_ITEM}),
        (
            "response.completed",
            {"response": _response("completed", [_MESSAGE_ITEM, _CALL_ITEM], RESPONSES_USAGE)},
        ),
    )
)
RESPONSE_WHOLE = Reply(
    [json.dumps(_response("completed", [_MESSAGE_ITEM, _CALL_ITEM], RESPONSES_USAGE)).encode()],
    content_type="application/json",
)

# --- Ollama's native API ------------------------------------------------------------------------


def _ollama_line(**part: Any) -> bytes:
    return (
        json.dumps({"model": "llama-scripted", "created_at": "2025-01-01T00:00:00Z", **part}).encode() + b"\n"
    )


_OLLAMA_LAST = _ollama_line(
    message={"role": "assistant", "content": ""},
    done=True,
    done_reason="stop",
    prompt_eval_count=26,
    eval_count=9,
    eval_duration=120_000_000,
)
OLLAMA_STREAM = Reply(
    [
        _ollama_line(message={"role": "assistant", "content": ""}, done=False),
        FIRST_TOKEN_DELAY_S,
        _ollama_line(message={"role": "assistant", "content": "Sure, "}, done=False),
        _ollama_line(message={"role": "assistant", "content": "café."}, done=False),
        _ollama_line(
            message={
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            },
            done=False,
        ),
        # The last line arrives in two pieces, the second without its line end.
        _OLLAMA_LAST[:40],
        _OLLAMA_LAST[40:-1],
    ],
    content_type="application/x-ndjson",
)
