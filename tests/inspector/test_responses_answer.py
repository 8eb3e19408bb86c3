"""A streamed OpenAI Responses answer put back together from its named events."""

from __future__ import annotations

import json
from typing import Any

from desktop.inspector.responses import responses_answer
from desktop.inspector.sse import EventReader


def event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 12},
    "output_tokens": 8,
    "total_tokens": 38,
}
STREAM = b"".join(
    [
        event("response.created", response={"id": "resp_1", "status": "in_progress", "model": "gpt-test"}),
        event("response.reasoning_summary_text.delta", output_index=0, delta="Needs "),
        event("response.reasoning_summary_text.delta", output_index=0, delta="weather."),
        event("response.output_item.added", output_index=1, item={"type": "message", "id": "msg_1"}),
        event("response.output_text.delta", output_index=1, delta="Checking "),
        event("response.output_text.delta", output_index=1, delta="Paris."),
        event(
            "response.output_item.added",
            output_index=2,
            item={
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "weather",
                "arguments": "",
            },
        ),
        event("response.function_call_arguments.delta", output_index=2, item_id="fc_1", delta='{"city":'),
        event("response.function_call_arguments.delta", output_index=2, item_id="fc_1", delta=' "Paris"}'),
        event(
            "response.completed",
            response={"id": "resp_1", "status": "completed", "model": "gpt-test", "usage": USAGE},
        ),
    ]
)


def test_text_reasoning_function_call_and_usage_are_put_back_together() -> None:
    answer = responses_answer(EventReader().feed(STREAM))
    assert (answer.text, answer.thinking) == ("Checking Paris.", "Needs weather.")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
        ("call_1", "weather", {"city": "Paris"})
    ]
    assert (answer.model, answer.finish_reason, answer.done, answer.usage) == (
        "gpt-test",
        "completed",
        True,
        USAGE,
    )


def test_a_failed_response_keeps_its_error() -> None:
    stream = event("response.failed", response={"status": "failed", "error": {"code": "server_error"}})
    answer = responses_answer(EventReader().feed(stream))
    assert (answer.finish_reason, answer.error, answer.done) == ("failed", {"code": "server_error"}, True)
