"""desktop.codings.BodyDecoder, which the inspector (what it shows) and the recording of answers
(what it checks before keeping) both read bodies through."""

from __future__ import annotations

import gzip
import zlib

from desktop.codings import BodyDecoder


def fed(decoder: BodyDecoder, body: bytes, cut: int) -> bytes:
    return decoder.feed(body[:cut]) + decoder.feed(body[cut:])


def test_every_member_of_a_gzip_body_is_read_however_it_is_cut() -> None:
    """A gzip body of several members (RFC 1952 §2.2): the inspector showed only the first, and
    the recording's own reader read them all; both read them all now."""
    body = gzip.compress(b"one ") + gzip.compress(b"two")
    for cut in range(len(body) + 1):
        decoder = BodyDecoder("gzip")
        assert fed(decoder, body, cut) == b"one two", cut
        assert decoder.finished
        assert decoder.problem == ""


def test_a_body_cut_short_is_not_finished_and_a_bomb_stops_at_the_limit() -> None:
    cut_short = BodyDecoder("gzip")
    cut_short.feed(gzip.compress(b"x" * 1000)[:-6])
    assert not cut_short.finished
    bomb = BodyDecoder("gzip", limit=1024)
    assert len(bomb.feed(gzip.compress(b"\0" * 100_000))) == 1024
    assert bomb.problem.startswith("decoded body over")
    assert not bomb.finished


def test_deflate_in_either_form_and_codings_not_read_here() -> None:
    assert BodyDecoder("deflate").feed(zlib.compress(b"zlib form")) == b"zlib form"
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert BodyDecoder("deflate").feed(raw.compress(b"raw form") + raw.flush()) == b"raw form"
    brotli = BodyDecoder("br")
    assert (brotli.feed(b"\x1b\x01"), brotli.problem, brotli.finished) == (b"", "br-encoded body: not decoded", False)
    plain = BodyDecoder("")
    assert (plain.feed(b"as sent"), plain.finished) == (b"as sent", True)
