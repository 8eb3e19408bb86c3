"""What a model answered, as the inspector shows it, whichever API it came through.

Filled by the readers of each API's stream (openai.py, anthropic.py); plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "ToolCall"]


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
