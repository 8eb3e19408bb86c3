"""The anthropic SDK as a tool uses it against TrayProxy: its base URL on the proxy, a
placeholder for its key (the proxy adds the real one), no retries of its own (a retry would
hide which attempt the proxy made), and no proxy from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anthropic

# What a tool sends as its own key when the proxy adds the real one.
PLACEHOLDER = "added-by-trayproxy"


@contextmanager
def anthropic_sdk(base_url: str, *, timeout_s: float) -> Iterator[anthropic.Anthropic]:
    """``anthropic.Anthropic`` on ``base_url``, its HTTP client closed at the end. The SDK's
    own client class (``DefaultHttpxClient``): its versions are built on different HTTP
    packages, and each accepts only its own."""
    with (
        anthropic.DefaultHttpxClient(trust_env=False) as http,
        anthropic.Anthropic(
            base_url=base_url, api_key=PLACEHOLDER, max_retries=0, timeout=timeout_s, http_client=http
        ) as sdk,
    ):
        yield sdk
