"""A response body's Content-Encoding undone, piece by piece, where the standard library can.

The proxy passes bodies on as the target encoded them, so the pieces the store kept may be
gzip or deflate (undone here) or brotli, zstd... (said, not read: no such decoder in the
standard library, and the inspector adds no dependency for them).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from desktop.inspector.store import Exchange

__all__ = ["MAX_DECODED_BYTES", "BodyDecoder", "decoded_body", "decoded_pieces", "response_header"]

# The most of a decoded body read: a small gzip bomb from a target must not take the machine.
MAX_DECODED_BYTES = 16 * 1024 * 1024


class BodyDecoder:
    """Undoes a Content-Encoding piece by piece, if the standard library can."""

    def __init__(self, encoding: str, *, limit: int = MAX_DECODED_BYTES) -> None:
        self.encoding = encoding.strip().lower()
        self.problem = ""
        self._limit = limit
        self._left = limit
        self._inflate: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding not in ("", "identity", "deflate"):
            self.problem = f"{self.encoding}-encoded body: not decoded"

    def feed(self, data: bytes) -> bytes:
        if self.problem:
            return b""
        if self.encoding == "deflate" and self._inflate is None:
            # RFC 9110 deflate is the zlib format; some servers send the raw deflate stream.
            zlib_header = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        if self._inflate is None:
            return data
        if self._left <= 0:  # (a max_length of 0 would mean no limit)
            self.problem = f"decoded body over {self._limit >> 20} MiB: only its start is read"
            return b""
        try:
            out: bytes = self._inflate.decompress(data, self._left)
        except zlib.error as exc:
            self.problem = f"{self.encoding}-encoded body could not be decoded ({exc})"
            return b""
        self._left -= len(out)
        if self._inflate.unconsumed_tail:
            self.problem = f"decoded body over {self._limit >> 20} MiB: only its start is read"
        return out


def decoded_pieces(exchange: Exchange, decoder: BodyDecoder) -> Iterator[tuple[bytes, float]]:
    """The kept pieces decoded, each with its loop time; they stop where decoding did."""
    for data, at in zip(exchange.chunks, exchange.chunk_times, strict=False):
        out = decoder.feed(data)
        if out:
            yield out, at
        if decoder.problem:
            return


# How much larger than what was kept a decoded body may be shown: text and JSON compress 5 to
# 10 times; a bomb (200 KB of gzip inflating to 200 MiB of NULs, 100 MB as escaped JSON in a
# detail or a HAR entry) far more.
MAX_DECODED_RATIO = 16
MIN_DECODED_LIMIT = 1024 * 1024


def decoded_body(exchange: Exchange) -> tuple[bytes, str]:
    """The kept response body with its Content-Encoding undone, and why not ("" when fine).
    It is decoded up to 16 times what was kept (at least 1 MiB, at most MAX_DECODED_BYTES)."""
    kept = sum(len(piece) for piece in exchange.chunks)
    limit = min(MAX_DECODED_BYTES, max(MIN_DECODED_LIMIT, MAX_DECODED_RATIO * kept))
    decoder = BodyDecoder(response_header(exchange, "Content-Encoding"), limit=limit)
    body = b"".join(data for data, _ in decoded_pieces(exchange, decoder))
    return (body if not decoder.problem or body else exchange.response_body()), decoder.problem


def response_header(exchange: Exchange, name: str) -> str:
    """A header of the response the client got ("" when none, or no response yet)."""
    return exchange.response_header(name)
