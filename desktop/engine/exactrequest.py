"""aiohttp's client request made to send only what the client sent.

A module of its own so that both ways of sending (Upstream's session and the lean path in
leansend.py) build on it without importing each other.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import hdrs

__all__ = ["SKIP_AUTO_HEADERS", "ExactRequest"]

# aiohttp's client adds these when absent; a proxy must send only what the client sent.
SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class ExactRequest(aiohttp.ClientRequest):
    """aiohttp's request without the ``Content-Length: 0`` it puts on a bodiless POST or
    DELETE; the session's ``skip_auto_headers`` keeps out its default Accept, Accept-Encoding,
    User-Agent and Content-Type, but does not cover this one, and a proxy should send only what
    the client sent (RFC 9110 §8.6: a sender should not add it to a request without content)."""

    def update_body_from_data(self, body: Any, *args: Any, **kwargs: Any) -> None:
        client_sent_length = hdrs.CONTENT_LENGTH in self.headers
        super().update_body_from_data(body, *args, **kwargs)
        if body is None and not client_sent_length:
            self.headers.popall(hdrs.CONTENT_LENGTH, None)
