"""What a model answered, as the inspector shows it, whichever API it came through.

Filled by the readers of each API's stream (openai.py, anthropic.py); plain values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from desktop.inspector.sse import Event

__all__ = ["Answer", "ToolCall", "json_events"]


@dataclass(slots=True)
class ToolCall:
    """One tool call as the model made it: ``arguments`` is the JSON text it streamed."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class Answer:
    """What the model answered (for OpenAI, the first choice; chunks of others are counted)."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    error: Any = None
    done: bool = False  # the stream said it was over ([DONE], message_stop)
    unreadable: int = 0  # data events that were not a JSON object
    other_choices: int = 0  # chunks for a choice other than the first


def json_events(events: Iterable[Event], answer: Answer) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, object) for each event whose data is a JSON object, the type its ``type`` member
    or else the event's name; every other event is counted in ``answer.unreadable``."""
    for event in events:
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            answer.unreadable += 1
            continue
        kind = data.get("type", event.name)
        yield (kind if isinstance(kind, str) else event.name), data
