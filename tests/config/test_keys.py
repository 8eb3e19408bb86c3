"""Key sources become the target's headers; an unreadable key falls back to the client's."""

from __future__ import annotations

from desktop.config.keys import resolve_target
from desktop.config.parse import parse_config

TEXT = """\
[targets.openai]
url = "https://api.openai.com"
key = { env = "TP_KEYS_TEST" }
headers = { Authorization = "Bearer {key}", "OpenAI-Organization" = "org-1" }
"""


def test_env_key_fills_the_key_placeholder() -> None:
    """The key from the environment goes into the header that asks for it, as a Secret."""
    spec = parse_config(TEXT).targets["openai"]
    target, warning = resolve_target(spec, {"TP_KEYS_TEST": "sk-from-env-123"})
    assert warning is None
    assert [(n, v.reveal()) for n, v in target.add_headers] == [
        ("Authorization", "Bearer sk-from-env-123"),
        ("OpenAI-Organization", "org-1"),
    ]
    assert "sk-from-env-123" not in repr(target)


def test_missing_env_key_leaves_the_clients_credentials_and_says_why() -> None:
    """A tray app started at login does not see shell variables: the header needing the key is
    left out (the client's own Authorization passes) and the warning names the variable."""
    spec = parse_config(TEXT).targets["openai"]
    target, warning = resolve_target(spec, {})
    assert [n for n, _ in target.add_headers] == ["OpenAI-Organization"]
    assert warning is not None
    assert "TP_KEYS_TEST" in warning
