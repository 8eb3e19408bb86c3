"""An answer's body made readable before it is kept, to check it holds no key and no error:
its Content-Encoding undone for gzip and deflate (zlib, bounded), the only codings read here.
An answer in another coding (br, zstd) cannot be checked, so it is not kept."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

__all__ = ["MAX_DECODED_BYTES", "decoded", "unreadable_coding"]

MAX_DECODED_BYTES = 64 * 1024 * 1024  # a 16 MiB answer compressed 4:1 (more: not kept)
_IDENTITY = frozenset({"", "identity"})
_READABLE = frozenset({"gzip", "x-gzip", "deflate"}) | _IDENTITY
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS  # zlib reads either header
_RAW_DEFLATE = -zlib.MAX_WBITS  # "deflate" sent without its zlib header, as some servers do


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
    """``body`` with its codings undone; None when one cannot be (unknown, corrupt, or over
    MAX_DECODED_BYTES once undone)."""
    data = body
    for coding in reversed(_codings(headers)):
        if coding in _IDENTITY:
            continue
        if coding not in _READABLE:
            return None
        undone = _inflate(data, _GZIP_OR_ZLIB)
        if undone is None and coding == "deflate":
            undone = _inflate(data, _RAW_DEFLATE)
        if undone is None:
            return None
        data = undone
    return data


def _inflate(data: bytes, wbits: int) -> bytes | None:
    """Every member of ``data`` (gzip may hold several, one after another) inflated."""
    out = bytearray()
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(rest, MAX_DECODED_BYTES + 1 - len(out))
            if len(out) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
                return None
            if not inflater.eof:
                return None  # cut short
            rest = inflater.unused_data
    except zlib.error:
        return None
    return bytes(out)
