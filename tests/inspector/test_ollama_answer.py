"""An Ollama NDJSON stream put back together, however its bytes were cut."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from desktop.inspector.answer import Answer
from desktop.inspector.ollama import LineReader, ndjson_answer

CHAT = b"".join(
    json.dumps(part).encode() + b"\n"
    for part in [
        {
            "model": "llama3.2",
            "message": {"role": "assistant", "content": "", "thinking": "Weather? "},
            "done": False,
        },
        {"model": "llama3.2", "message": {"role": "assistant", "content": "Sure, "}, "done": False},
        {"model": "llama3.2", "message": {"role": "assistant", "content": "caf\u00e9."}, "done": False},
        {
            "model": "llama3.2",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            },
            "done": False,
        },
        {
            "model": "llama3.2",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 26,
            "eval_count": 9,
            "eval_duration": 120000000,
        },
    ]
)


def answer_of(pieces: list[bytes]) -> Answer:
    reader = LineReader()
    lines = [line for piece in pieces for line in reader.feed(piece)] + reader.close()
    return ndjson_answer(lines)


def test_a_chat_stream_gives_its_text_thinking_tool_calls_and_counts() -> None:
    reader = LineReader()
    answer = ndjson_answer(reader.feed(CHAT) + reader.close())
    assert (answer.text, answer.thinking, answer.model) == ("Sure, café.", "Weather? ", "llama3.2")
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [("weather", {"city": "Paris"})]
    assert (answer.done, answer.finish_reason) == (True, "stop")
    assert answer.usage == {"prompt_eval_count": 26, "eval_count": 9, "eval_duration": 120000000}


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=len(CHAT)), max_size=20))
def test_the_answer_is_the_same_however_the_bytes_were_cut(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(CHAT)]
    assert answer_of([CHAT[a:b] for a, b in itertools.pairwise(points)]) == answer_of([CHAT])


def test_a_generate_stream_and_a_last_line_without_its_end() -> None:
    stream = b'{"model":"m","response":"Hel","done":false}\r\n{"model":"m","response":"lo","done":true,"eval_count":2}'
    answer = answer_of([stream])
    assert (answer.text, answer.done, answer.usage) == ("Hello", True, {"eval_count": 2})
