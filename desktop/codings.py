"""A body's Content-Encoding undone, piece by piece, where the standard library can: gzip (every
member) and deflate, through zlib, bounded; brotli, zstd... are said, not read (no such decoder
in the standard library, and no dependency is added for them). The inspector reads what it
shows through it, the recording of answers what it checks before keeping one.
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["MAX_DECODED_BYTES", "BodyDecoder"]

# The most of a decoded body read unless told: a small gzip bomb must not take the machine.
MAX_DECODED_BYTES = 16 * 1024 * 1024
_GZIP = 16 + zlib.MAX_WBITS


class BodyDecoder:
    """Undoes one Content-Encoding piece by piece, if the standard library can; ``problem`` says
    why it stopped ("" while fine), ``finished`` whether the coded body ended whole."""

    def __init__(self, encoding: str, *, limit: int = MAX_DECODED_BYTES) -> None:
        self.encoding = encoding.strip().lower()
        self.problem = ""
        self._limit = limit
        self._left = limit
        self._inflate: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(_GZIP)
        elif self.encoding not in ("", "identity", "deflate"):
            self.problem = f"{self.encoding}-encoded body: not decoded"

    @property
    def finished(self) -> bool:
        """True when the body fed so far is whole: not coded, or its last member ended."""
        return not self.problem and (self._inflate is None or self._inflate.eof)

    def feed(self, data: bytes) -> bytes:
        if self.problem:
            return b""
        if self.encoding == "deflate" and self._inflate is None:
            # RFC 9110 deflate is the zlib format; some servers send the raw deflate stream.
            zlib_header = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        if self._inflate is None:
            return data
        out = self._inflated(data)
        # A gzip body may hold several members, one after another (RFC 1952 §2.2).
        while not self.problem and self._inflate.eof and self._inflate.unused_data and self.encoding != "deflate":
            rest = self._inflate.unused_data
            self._inflate = zlib.decompressobj(_GZIP)
            out += self._inflated(rest)
        return out

    def _inflated(self, data: bytes) -> bytes:
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
