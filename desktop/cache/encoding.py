"""An answer's body made readable before it is kept, to check it holds no key and no error:
its Content-Encodings undone (desktop.codings: gzip and deflate, bounded), the only codings read
here. An answer in another coding (br, zstd) cannot be checked, so it is not kept."""

from __future__ import annotations

from collections.abc import Sequence

from desktop.codings import BodyDecoder

__all__ = ["MAX_DECODED_BYTES", "decoded", "unreadable_coding"]

MAX_DECODED_BYTES = 64 * 1024 * 1024  # a 16 MiB answer compressed 4:1 (more: not kept)
_IDENTITY = frozenset({"", "identity"})
_READABLE = frozenset({"gzip", "x-gzip", "deflate"}) | _IDENTITY


def _codings(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The codings applied, in the order they were (RFC 9110 §8.4)."""
    return [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == "content-encoding"
        for coding in value.split(",")
    ]


def unreadable_coding(headers: Sequence[tuple[str, str]]) -> str:
    """The first coding that cannot be undone here ("br"); "" when every one can."""
    return next((coding for coding in _codings(headers) if coding not in _READABLE), "")


def decoded(headers: Sequence[tuple[str, str]], body: bytes) -> bytes | None:
    """``body`` with its codings undone; None when one cannot be (unknown, corrupt, cut short,
    or over MAX_DECODED_BYTES once undone)."""
    data = body
    for coding in reversed(_codings(headers)):
        if coding in _IDENTITY or not data:
            continue
        decoder = BodyDecoder(coding, limit=MAX_DECODED_BYTES)
        data = decoder.feed(data)
        if not decoder.finished:
            return None
    return data
