"""Recordings, the engine's AnswerRecall: what each mode answers, what is kept, coalescing."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recorded import answer, ask, finish, replayed

from desktop import redaction
from desktop.cache import Recordings, RecordingStore
from desktop.cache.recordings import AnswerRecorder
from desktop.config.model import Recording
from desktop.engine.recall import Replay

SSE = (("Content-Type", "text/event-stream"),)
GZIPPED_ERROR = gzip.compress(b'data: {}\n\nevent: error\ndata: {"type":"overloaded_error"}\n\n')


@pytest.fixture
def recordings(tmp_path: Path) -> Iterator[Recordings]:
    made = Recordings(tmp_path / "recordings" / "answers.sqlite3")
    yield made
    made.close()


async def record(
    recordings: Recordings,
    pieces: list[bytes],
    mode: str = "record",
    headers_out: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    **fields: object,
) -> None:
    recorder = await recordings.lookup(ask(mode, **fields))  # type: ignore[arg-type]
    assert isinstance(recorder, AnswerRecorder)
    answer(recorder, pieces, headers=headers_out)


async def test_a_recorded_stream_replays_its_pieces_in_order_with_its_headers(recordings: Recordings) -> None:
    """The same chunks in the same order and the target's headers, Set-Cookie left behind."""
    recorder = await recordings.lookup(ask("record"))
    assert isinstance(recorder, AnswerRecorder)
    pieces = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]
    answer(recorder, pieces, headers=(*SSE, ("Set-Cookie", "session=abc"), ("x-request-id", "r1")))
    found = await recordings.lookup(ask("replay"))
    assert isinstance(found, Replay)
    assert found.source == "hit"
    assert (found.status, found.reason) == (200, "OK")
    assert found.headers == (("Content-Type", "text/event-stream"), ("x-request-id", "r1"))
    assert await replayed(found) == pieces
    assert await recordings.lookup(ask("offline", "another prompt")) is None


async def test_record_never_looks_up_and_offline_never_records(recordings: Recordings) -> None:
    await record(recordings, [b"first"])
    assert isinstance(await recordings.lookup(ask("record")), AnswerRecorder)
    assert isinstance(await recordings.lookup(ask("offline")), Replay)
    assert await recordings.lookup(ask("offline", "unrecorded")) is None
    assert await recordings.lookup(ask("off")) is None


async def test_no_store_is_neither_looked_up_nor_kept(recordings: Recordings) -> None:
    await record(recordings, [b"kept"])
    no_store = ((b"Cache-Control", b"no-store"),)
    assert await recordings.lookup(ask("replay", headers=no_store)) is None
    assert await recordings.lookup(ask("offline", headers=no_store)) is None
    assert await recordings.lookup(ask("record", "other", headers=no_store)) is None
    assert await recordings.lookup(ask("offline", "other")) is None


async def test_no_cache_refreshes_the_recording_in_replay(recordings: Recordings) -> None:
    await record(recordings, [b"old"])
    refresh = await recordings.lookup(ask("replay", headers=((b"cache-control", b"max-age=0, no-cache"),)))
    assert isinstance(refresh, AnswerRecorder)
    answer(refresh, [b"new"])
    found = await recordings.lookup(ask("replay"))
    assert isinstance(found, Replay)
    assert await replayed(found) == [b"new"]


@pytest.mark.parametrize(
    ("status", "headers", "pieces", "note"),
    [
        (500, SSE, [b"data: {}\n\n"], ""),
        (200, SSE, [b"data: {}\n\n"], "client went away"),
        (200, SSE, [b"data: {}\n\n", b'event: error\ndata: {"type":"overloaded"}\n\n'], ""),
        (200, SSE, [b'data: {"error": {"message": "boom"}}\n\n'], ""),
        (200, (("Content-Type", "application/json"), ("Vary", "*")), [b"{}"], ""),
        # From the attacker trial: the Responses API's failure, Ollama's error line, a failure
        # under gzip, a coding that cannot be read to check it.
        (200, SSE, [b'event: response.created\ndata: {}\n\n', b'event: response.failed\ndata: {"type":"response.failed","response":{"error":{"code":"server_error"}}}\n\n'], ""),
        (200, SSE, [b'data: {"type":"response.failed","response":{}}\n\n'], ""),
        (200, (("Content-Type", "application/x-ndjson"),), [b'{"message":{"content":"Hel"}}\n', b'{"error":"model crashed"}\n'], ""),
        (200, (*SSE, ("Content-Encoding", "gzip")), [GZIPPED_ERROR], ""),
        (200, (("Content-Type", "application/json"), ("Content-Encoding", "br")), [b"\x1b\x01\x00"], ""),
        # From the re-check: Gemini's streamed array, an error's JSON over two data lines, an
        # escaped name, a whole JSON answer saying error.
        (200, (("Content-Type", "application/json"),), [b'[{"candidates": []},', b' {"error": {"code": 503}}]'], ""),
        (200, SSE, [b'data: {"error":\ndata: {"message": "overloaded"}}\n\n'], ""),
        (200, SSE, [b'data: {"\\u0065rror": {"message": "boom"}}\n\n'], ""),
        (200, (("Content-Type", "application/json"),), [b'{"error": {"message": "quota"}}'], ""),
    ],
    ids=["not-2xx", "cut", "event-error", "data-error", "vary-star", "response-failed", "data-type-failed", "ndjson-error", "gzip-error", "brotli", "gemini-array", "two-data-lines", "escaped-name", "json-error"],
)
async def test_an_answer_that_did_not_end_cleanly_is_not_kept(
    recordings: Recordings, status: int, headers: tuple[tuple[str, str], ...], pieces: list[bytes], note: str
) -> None:
    recorder = await recordings.lookup(ask("record"))
    assert isinstance(recorder, AnswerRecorder)
    answer(recorder, pieces, status=status, headers=headers, note=note)
    assert await recordings.lookup(ask("offline")) is None


async def test_answers_naming_no_error_are_kept(recordings: Recordings) -> None:
    """A Responses API object carries "error": null, and a stream's text may say "error": kept."""
    await record(recordings, [b'{"id": "resp_1", "status": "completed", "error": null, "output": []}'], prompt="a")
    await record(
        recordings,
        [b'data: {"choices": [{"delta": {"content": "the error was mine"}}]}\n\n', b"data: [DONE]\n\n"],
        prompt="b",
        headers_out=SSE,
    )
    assert isinstance(await recordings.lookup(ask("offline", "a")), Replay)
    assert isinstance(await recordings.lookup(ask("offline", "b")), Replay)


async def test_an_answer_past_16_mib_is_not_kept(recordings: Recordings) -> None:
    recorder = await recordings.lookup(ask("record"))
    assert isinstance(recorder, AnswerRecorder)
    answer(recorder, [b"x" * (1024 * 1024)] * 17)
    assert await recordings.lookup(ask("offline")) is None


async def test_no_credential_reaches_the_file(recordings: Recordings, tmp_path: Path) -> None:
    """The client's own key (headers, query) is left out; an exchange holding a key TrayProxy
    sends (a registered secret) is not kept at all."""
    registered = "tp-test-registered-secret-0123456789"
    saved = redaction._known_secrets
    redaction.register_secrets([registered])
    try:
        client_key = (b"x-api-key", b"sk-ant-client-own-key-42"), (b"Cookie", b"sid=cookie-secret-77")
        await record(recordings, [b"answer one"], headers=client_key, query="key=AIzaQueryKey123456&alt=sse")
        await record(recordings, [f"echo {registered}".encode()], prompt="echo")
        await record(recordings, [b"answer three"], prompt=f"my key is {registered}")
        found = await recordings.lookup(ask("offline", headers=client_key, query="key=other-key&alt=sse"))
        assert isinstance(found, Replay), "the credential parameter is not part of the key"
        assert await recordings.lookup(ask("offline", "echo")) is None
        assert await recordings.lookup(ask("offline", f"my key is {registered}")) is None
    finally:
        redaction._known_secrets = saved
    recordings.close()
    on_disk = b"".join(path.read_bytes() for path in (tmp_path / "recordings").iterdir())
    assert b"answer one" in on_disk
    for secret in (
        b"sk-client-own-key",
        b"sk-ant-client-own-key-42",
        b"cookie-secret-77",
        b"AIzaQueryKey",
        registered.encode(),
    ):
        assert secret not in on_disk


async def test_a_compressed_answer_holding_a_registered_key_is_not_kept(recordings: Recordings) -> None:
    """The key check reads the answer as the tool reads it: a gzip answer echoing the key TrayProxy
    sends was written to the file and exported (attacker trial); a plain one never was."""
    registered = "tp-test-registered-secret-gzip-0123456789"
    saved = redaction._known_secrets
    redaction.register_secrets([registered])
    try:
        gzipped = (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))
        body = gzip.compress(f'{{"auth": "Bearer {registered}"}}'.encode())
        await record(recordings, [body[:10], body[10:]], prompt="whoami", headers_out=gzipped)
        await record(recordings, [gzip.compress(b'{"fine": true}')], prompt="fine", headers_out=gzipped)
        assert isinstance(await recordings.lookup(ask("offline", "fine")), Replay)
        assert await recordings.lookup(ask("offline", "whoami")) is None
    finally:
        redaction._known_secrets = saved


async def test_followers_of_an_answer_past_16_mib_get_it_whole_holding_only_their_lag(
    recordings: Recordings,
) -> None:
    """Two identical requests for a 200 MB answer held it all for the follower (207 MB more in
    the attacker trial); cutting followers past the cap broke their answers instead (re-check).
    Now only what a follower has yet to read is held, and one lagging over 16 MiB is cut."""
    leader = await recordings.lookup(ask("replay"))
    assert isinstance(leader, AnswerRecorder)
    answer(leader, [b"x" * 1024], end=False)
    reading = await recordings.lookup(ask("replay"))
    stalled = await recordings.lookup(ask("replay"))
    assert isinstance(reading, Replay)
    assert isinstance(stalled, Replay)
    pieces, stalled_pieces = aiter(reading.pieces), aiter(stalled.pieces)
    got = [await anext(pieces)]
    assert await anext(stalled_pieces) == b"x" * 1024  # then it reads no more
    mib = b"y" * (1024 * 1024)
    for _ in range(40):
        leader.chunk(mib, 101.0)
        got.append(await anext(pieces))
        assert leader._held <= 17 * 1024 * 1024  # the stalled one's lag, at most, plus a piece
    finish(leader)
    got += [piece async for piece in pieces]
    assert b"".join(got) == b"x" * 1024 + mib * 40  # whole, in order
    with pytest.raises(ConnectionResetError, match="lagged over 16 MiB"):
        await anext(stalled_pieces)
    assert leader._held == 0
    assert await recordings.lookup(ask("offline")) is None  # over 16 MiB: not kept


async def test_vary_names_headers_the_answer_depends_on(recordings: Recordings) -> None:
    tenant = ((b"X-Tenant", b"blue"),)
    recorder = await recordings.lookup(ask("record", headers=tenant))
    assert isinstance(recorder, AnswerRecorder)
    answer(
        recorder,
        [b"blue answer"],
        headers=(("Content-Type", "application/json"), ("Vary", "X-Tenant, Authorization")),
    )
    assert isinstance(await recordings.lookup(ask("offline", headers=tenant)), Replay)
    assert await recordings.lookup(ask("offline", headers=((b"x-tenant", b"red"),))) is None
    assert await recordings.lookup(ask("offline")) is None


async def test_identical_misses_in_replay_go_out_once_and_follow_the_leader(recordings: Recordings) -> None:
    """Identical requests at once: one goes to the target, the others follow its answer as
    it arrives, piece by piece, and the next one is a hit."""
    leader = await recordings.lookup(ask("replay"))
    assert isinstance(leader, AnswerRecorder)
    waiting = [asyncio.ensure_future(recordings.lookup(ask("replay"))) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting), "followers wait for the leader's head"
    answer(leader, [b"data: 1\n\n"], headers=SSE, end=False)
    followers = await asyncio.gather(*waiting)
    assert all(isinstance(f, Replay) and f.source == "follow" and f.head_first for f in followers)
    reads = [asyncio.ensure_future(replayed(f)) for f in followers if isinstance(f, Replay)]
    await asyncio.sleep(0.05)
    assert not any(read.done() for read in reads), "the answer is not over yet"
    leader.chunk(b"data: 2\n\n", 101.0)
    finish(leader)
    assert [await read for read in reads] == [[b"data: 1\n\n", b"data: 2\n\n"]] * 2
    found = await recordings.lookup(ask("replay"))
    assert isinstance(found, Replay)
    assert found.source == "hit"


async def test_a_cut_leader_cuts_its_followers_and_a_failed_one_sends_them_out(
    recordings: Recordings,
) -> None:
    leader = await recordings.lookup(ask("replay"))
    assert isinstance(leader, AnswerRecorder)
    waiting = asyncio.ensure_future(recordings.lookup(ask("replay")))
    await asyncio.sleep(0)
    answer(leader, [b"data: 1\n\n"], headers=SSE, end=False)
    follower = await waiting
    assert isinstance(follower, Replay)
    finish(leader, note="client went away")
    with pytest.raises(ConnectionResetError):
        await replayed(follower)

    leader = await recordings.lookup(ask("replay"))
    assert isinstance(leader, AnswerRecorder), "a cut answer was not kept"
    waiting = asyncio.ensure_future(recordings.lookup(ask("replay")))
    await asyncio.sleep(0)
    answer(leader, [b'{"error": "overloaded"}'], status=529)
    assert isinstance(await waiting, AnswerRecorder), "after a failure each goes out itself"


async def test_record_mode_never_coalesces(recordings: Recordings) -> None:
    """Evals sample the same prompt on purpose: each request goes to the target."""
    made = await asyncio.gather(*(recordings.lookup(ask("record")) for _ in range(3)))
    assert all(isinstance(m, AnswerRecorder) for m in made)


async def test_recorded_pace_replays_at_the_recorded_offsets(tmp_path: Path) -> None:
    """Margins are wide: the claim is "paced" against "back to back", on a busy machine."""
    recordings = Recordings(tmp_path / "answers.sqlite3", Recording(pace="recorded"))
    try:
        recorder = await recordings.lookup(ask("record"))
        assert isinstance(recorder, AnswerRecorder)
        answer(recorder, [b"a", b"b", b"c", b"d"], headers=SSE, gap_s=0.1)
        found = await recordings.lookup(ask("replay"))
        assert isinstance(found, Replay)
        started = time.monotonic()
        assert await replayed(found) == [b"a", b"b", b"c", b"d"]
        paced_s = time.monotonic() - started
        recordings.configure(Recording(pace="fast"))
        found = await recordings.lookup(ask("replay"))
        assert isinstance(found, Replay)
        started = time.monotonic()
        await replayed(found)
        fast_s = time.monotonic() - started
    finally:
        recordings.close()
    assert 0.29 <= paced_s < 1.0
    assert fast_s < 0.1


async def test_a_store_that_cannot_be_opened_is_all_miss_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "answers.sqlite3"
    folder.mkdir()
    recordings = Recordings(folder)
    try:
        with caplog.at_level(logging.WARNING, logger="trayproxy.cache"):
            for mode in ("replay", "offline", "replay", "record"):
                assert await recordings.lookup(ask(mode)) is None
    finally:
        recordings.close()
    warnings = [r for r in caplog.records if r.name == "trayproxy.cache"]
    assert len(warnings) == 1
    assert "answers.sqlite3" in warnings[0].getMessage()


async def test_the_worker_thread_starts_at_the_first_lookup_and_close_keeps_the_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "answers.sqlite3"
    before = {t.name for t in threading.enumerate()}
    recordings = Recordings(path)
    assert {t.name for t in threading.enumerate()} == before
    recorder = await recordings.lookup(ask("record"))
    assert isinstance(recorder, AnswerRecorder)
    answer(recorder, [b"kept on close"])
    recordings.close()
    assert not any(t.name.startswith("trayproxy-recordings") for t in threading.enumerate())
    with RecordingStore.open(path) as store:
        assert store.stats().entries == 1


async def test_no_cache_offline_is_answered_from_the_recording(recordings: Recordings) -> None:
    """Offline has no target to refresh from: a tool that always sends no-cache still works."""
    await record(recordings, [b"kept"])
    found = await recordings.lookup(ask("offline", headers=((b"Cache-Control", b"no-cache"),)))
    assert isinstance(found, Replay)
    assert await replayed(found) == [b"kept"]


async def test_a_hit_counts_as_used_even_when_nothing_is_recorded_after_it(tmp_path: Path) -> None:
    """Hits are marked used in a batch (a second later, or at the next put, or at close): a
    replay-only session still keeps what it used when the cap is lowered."""
    path = tmp_path / "answers.sqlite3"
    recordings = Recordings(path)
    try:
        await record(recordings, [b"a" * 4000], prompt="used")
        await record(recordings, [b"b" * 4000], prompt="unused")
        assert isinstance(await recordings.lookup(ask("replay", "used")), Replay)
    finally:
        recordings.close()
    with RecordingStore.open(path) as store:
        assert store.trim(6000) == 1
        assert [e.request_body for e in store.exchanges()] == [ask(prompt="used").body]


async def test_an_offline_miss_is_told_what_is_recorded_instead(recordings: Recordings) -> None:
    """Every miss said "nothing was recorded for it", whether another Accept-Encoding, another
    prompt or another target name was the cause (cold user trial: 8 answers were there)."""
    assert await recordings.explain_miss(ask("offline")) == "nothing is recorded yet"
    await record(recordings, [b"kept"], headers=((b"Accept-Encoding", b"gzip, deflate"),))
    assert await recordings.explain_miss(ask("offline", headers=((b"Accept-Encoding", b"gzip, deflate, br"),))) == (
        "recorded with other headers: accept-encoding 'gzip, deflate' where this request sent 'gzip, deflate, br'"
    )
    assert await recordings.explain_miss(ask("offline", "another prompt")) == (
        "1 answer is recorded for POST /v1/chat/completions on this target, none with this body and query"
        " (another prompt, model or parameter)"
    )
    assert await recordings.explain_miss(ask("offline", target="https://api.openai.com")) == (
        "nothing is recorded for this target; recorded targets: openai (1)"
    )


async def test_a_key_cut_across_two_pieces_is_not_kept(recordings: Recordings) -> None:
    """Each piece was checked alone: a stream echoing the key with a cut inside it was kept and
    exported (re-check of the attacker trial's fixes)."""
    registered = "tp-test-registered-secret-split-0123456789"
    saved = redaction._known_secrets
    redaction.register_secrets([registered])
    try:
        echo = f'data: {{"auth": "Bearer {registered}"}}\n\n'.encode()
        cut = echo.index(b"secret-split")
        await record(recordings, [echo[:cut], echo[cut:]], prompt="split", headers_out=SSE)
        assert await recordings.lookup(ask("offline", "split")) is None
    finally:
        redaction._known_secrets = saved


async def test_the_tools_own_key_echoed_in_the_answer_is_not_kept(
    recordings: Recordings, caplog: pytest.LogCaptureFixture
) -> None:
    """A target that adds no key gets the tool's own; an answer echoing it was written and
    exported ("never keys"). A placeholder the tool sends instead of a key is no key."""
    own = "sk-proj-CLIENTOWNKEY1234567890abcdef"
    headers = ((b"Authorization", f"Bearer {own}".encode()),)
    with caplog.at_level(logging.INFO, logger="trayproxy.cache"):
        await record(recordings, [f'{{"you": "Bearer {own}"}}'.encode()], prompt="whoami", headers=headers)
        assert await recordings.lookup(ask("offline", "whoami", headers=headers)) is None
    assert "Recorded answers: not kept: POST /v1/chat/completions on openai: it holds the key your tool sent" in caplog.text
    placeholder = ((b"Authorization", b"Bearer unused"),)
    await record(recordings, [b'{"said": "unused"}'], prompt="placeholder", headers=placeholder)
    assert isinstance(await recordings.lookup(ask("offline", "placeholder", headers=placeholder)), Replay)
