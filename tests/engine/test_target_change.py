"""The log line when a listener's target is replaced (engine.service.describe_target_change):
a switch names the new target; an edit of the same one says what changed, never a key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from desktop.config.model import Secret, Target
from desktop.engine.service import describe_target_change

OLD_KEY, NEW_KEY = "sk-old-key-0123456789abcdef", "sk-new-key-0123456789abcdef"
BASE = Target(url="https://api.example", name="claude", add_headers=(("x-api-key", Secret(OLD_KEY)),))


@pytest.mark.parametrize(
    ("new", "line"),
    [
        (replace(BASE, name="other"), "target is now other"),
        (
            replace(BASE, url="https://eu.api.example"),
            "target claude on port 8001: url is now https://eu.api.example",
        ),
        (
            replace(BASE, add_headers=(("x-api-key", Secret(NEW_KEY)),)),
            "target claude on port 8001: header x-api-key has a new value",
        ),
        (
            replace(BASE, add_headers=(("anthropic-version", Secret("2023-06-01")),)),
            "target claude on port 8001: adds header anthropic-version, no longer adds header x-api-key",
        ),
        (
            replace(BASE, proxy="http://user:hunter2@corp:3128"),
            "target claude on port 8001: outgoing proxy changed",
        ),
        (replace(BASE, read_timeout_s=30.0), "target claude on port 8001: read timeout is now 30 s"),
    ],
)
def test_what_changed_is_said_without_any_secret(new: Target, line: str) -> None:
    assert describe_target_change(BASE, new, port=8001) == line
