"""The size cap: three times the cap written, the file stays within it, the recently used stay."""

from __future__ import annotations

import os
from pathlib import Path

from recorded import answer, ask

from desktop.cache import Recordings, RecordingStore
from desktop.cache.recordings import AnswerRecorder
from desktop.config.model import Recording
from desktop.engine.recall import Replay

MIB = 1024 * 1024
KIB = 1024
ANSWER_BYTES = 8 * KIB
# The file's own pages besides the rows (header, schema, index roots, the total): measured 16 KiB.
FILE_MARGIN_BYTES = 64 * KIB
# The -wal is checkpointed at an eighth of the cap, at least 256 KiB (store.MIN_WAL_BYTES), and
# may hold one transaction more before that checkpoint runs: the entry, and the pages its row,
# the three indexes, the total and the entries hit meanwhile touch (measured: 10 pages).
WAL_MARGIN_BYTES = 256 * KIB + ANSWER_BYTES + 64 * KIB


def sizes(path: Path) -> tuple[int, int]:
    wal = Path(f"{path}-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


async def test_three_times_the_cap_keeps_the_file_within_it_and_the_recently_used(tmp_path: Path) -> None:
    """1 MiB cap, 3 MiB of 8 KiB answers recorded one after another; every 16 answers the first
    four are asked for again (hits). At the end those four are still there, the early ones
    nobody asked for again are gone, and the file never grew past the cap plus its margins."""
    path = tmp_path / "answers.sqlite3"
    recordings = Recordings(path, Recording(max_mib=1))
    favourites = [f"favourite {n}" for n in range(4)]
    most_file = most_wal = 0
    try:
        total = 0
        number = 0
        while total < 3 * MIB:
            prompt = favourites[number] if number < len(favourites) else f"prompt {number}"
            recorder = await recordings.lookup(ask("record", prompt))
            assert isinstance(recorder, AnswerRecorder)
            answer(recorder, [os.urandom(ANSWER_BYTES // 4) for _ in range(4)])
            total += ANSWER_BYTES
            number += 1
            if number % 16 == 0:
                for favourite in favourites:
                    # A lookup runs after the writes asked before it (one worker): also a sync point.
                    assert isinstance(await recordings.lookup(ask("replay", favourite)), Replay)
                file_bytes, wal_bytes = sizes(path)
                most_file, most_wal = max(most_file, file_bytes), max(most_wal, wal_bytes)
        for early in range(len(favourites), 40):
            assert await recordings.lookup(ask("offline", f"prompt {early}")) is None
        assert isinstance(await recordings.lookup(ask("offline", f"prompt {number - 1}")), Replay)
    finally:
        recordings.close()
    with RecordingStore.open(path) as store:
        stats = store.stats()
    print(
        f"wrote {number} answers ({total / MIB:.1f} MiB) under a 1 MiB cap: {stats.entries} kept,"
        f" counted {stats.bytes / MIB:.3f} MiB; largest file {most_file / MIB:.3f} MiB,"
        f" largest -wal {most_wal / MIB:.3f} MiB; after close {sizes(path)[0] / MIB:.3f} MiB"
    )
    assert stats.bytes <= MIB
    assert most_file <= MIB + FILE_MARGIN_BYTES
    assert most_wal <= WAL_MARGIN_BYTES
    assert sum(sizes(path)) <= MIB + FILE_MARGIN_BYTES
