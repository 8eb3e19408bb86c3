"""A kill at any moment leaves a store that opens and holds only whole entries."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from record_many import answer_of

from desktop.cache import RecordedExchange, Recordings, RecordingStore
from desktop.engine.recall import RecallRequest, Replay

SCRIPT = Path(__file__).with_name("record_many.py")
KILLS = 5


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.timeout(120)
def test_sigkill_during_100_concurrent_recordings_leaves_only_whole_entries(tmp_path: Path) -> None:
    """A process writing 100 recordings at once is killed (SIGKILL: no cleanup, no atexit)
    at a random moment, five times over the same file. Afterwards the file passes SQLite's
    integrity check, and every entry in it replays whole: its pieces join to exactly the answer
    it was recorded from."""
    path = tmp_path / "recordings" / "answers.sqlite3"
    chance = random.Random(16)
    rounds_seen = []
    for _ in range(KILLS):
        with subprocess.Popen([sys.executable, str(SCRIPT), str(path)], stdout=subprocess.PIPE) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            time.sleep(chance.uniform(0.2, 1.2))
            child.send_signal(signal.SIGKILL)
            rounds_seen.append(child.stdout.read().count(b"round"))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with RecordingStore.open(path) as store:
        entries = list(store.exchanges())
    assert entries, f"nothing was written before the kills (rounds finished: {rounds_seen})"
    for entry in entries:
        assert b"".join(piece for _, piece in entry.pieces) == answer_of(entry.request_body)
    assert asyncio.run(replayed_whole(path, entries)) == len(entries)
    print(f"{len(entries)} whole entries after {KILLS} kills; rounds of 100 finished per run: {rounds_seen}")


async def replayed_whole(path: Path, entries: list[RecordedExchange]) -> int:
    """How many of ``entries`` a Recordings over ``path`` replays whole, offline."""
    recordings = Recordings(path)
    whole = 0
    try:
        for entry in entries:
            found = await recordings.lookup(
                RecallRequest(
                    "offline", entry.target, entry.method, entry.path, entry.query, entry.request_body, ()
                )
            )
            assert isinstance(found, Replay)
            if b"".join([piece async for piece in found.pieces]) == answer_of(entry.request_body):
                whole += 1
    finally:
        recordings.close()
    return whole
