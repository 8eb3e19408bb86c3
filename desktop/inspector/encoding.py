"""A response body's Content-Encoding undone for the inspector (desktop.codings does it).

The proxy passes bodies on as the target encoded them, so the pieces the store kept may be
gzip or deflate (undone) or brotli, zstd... (said, not read).
"""

from __future__ import annotations

from collections.abc import Iterator

from desktop.codings import MAX_DECODED_BYTES, BodyDecoder
from desktop.inspector.store import Exchange

__all__ = ["MAX_DECODED_BYTES", "BodyDecoder", "decoded_body", "decoded_pieces", "response_header"]


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
