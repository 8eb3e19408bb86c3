"""The recording's file: private, whole entries, found by key, cleared and counted."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest
from recorded import chat_exchange

from desktop.cache import RecordingStore, StoreError, default_store_path
from desktop.cache.key import request_headers

MIB = 1024 * 1024


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_the_folder_is_0700_and_every_file_0600(tmp_path: Path) -> None:
    """Prompts and answers are private: no other user of the machine may read them, the
    WAL and shared-memory files SQLite makes beside the file included."""
    path = tmp_path / "cache" / "recordings" / "answers.sqlite3"
    with RecordingStore.open(path) as store:
        assert store.put(chat_exchange(), max_bytes=MIB)
        assert {p.name for p in path.parent.iterdir()} >= {"answers.sqlite3", "answers.sqlite3-wal"}
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
        for entry in path.parent.iterdir():
            assert entry.stat().st_mode & 0o777 == 0o600, entry.name


def test_the_default_store_is_in_the_user_cache_directory(tmp_path: Path) -> None:
    """conftest points XDG_CACHE_HOME (and HOME) into the test's folder."""
    path = default_store_path()
    assert path.name == "answers.sqlite3"
    assert path.parent.name == "recordings"
    assert path.parent.parent.name == "TrayProxy"
    assert tmp_path in path.parents


def test_an_answer_is_found_by_its_request_and_replaced_by_a_newer_one(tmp_path: Path) -> None:
    with RecordingStore.open(tmp_path / "answers.sqlite3") as store:
        first = chat_exchange(answer=b"first", recorded_at=1000.0)
        assert store.put(first, max_bytes=MIB)
        found = store.find(first.base_key(), request_headers(()))
        assert found is not None
        assert b"".join(piece for _, piece in found.pieces) == b"first"
        assert store.put(chat_exchange(answer=b"second", pieces=3), max_bytes=MIB)
        found = store.find(first.base_key(), ())
        assert found is not None
        assert [piece for _, piece in found.pieces] == [b"se", b"co", b"nd"]
        assert store.stats().entries == 1
        assert store.find(chat_exchange("another prompt").base_key(), ()) is None


def test_stats_count_per_target_and_clear_takes_one_target_or_all(tmp_path: Path) -> None:
    with RecordingStore.open(tmp_path / "answers.sqlite3") as store:
        for prompt in ("a", "b", "c"):
            store.put(chat_exchange(prompt, target="openai", recorded_at=2000.0), max_bytes=MIB)
        store.put(chat_exchange("a", target="anthropic", recorded_at=1000.0), max_bytes=MIB)
        stats = store.stats()
        assert stats.entries == 4
        assert [(t.target, t.entries) for t in stats.targets] == [("anthropic", 1), ("openai", 3)]
        assert stats.bytes == sum(t.bytes for t in stats.targets) > 0
        assert stats.oldest is not None
        assert stats.oldest.timestamp() == 1000.0
        assert stats.newest is not None
        assert stats.newest.timestamp() == 2000.0
        assert stats.file_bytes > 0
        assert store.clear("anthropic") == 1
        assert store.clear("nobody") == 0
        assert store.clear() == 3
        assert store.stats().entries == 0
        assert store.stats().oldest is None


def test_a_file_that_is_no_recording_raises_store_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite3"
    path.write_bytes(b"this is not a database, just some text that is long enough to read" * 100)
    with pytest.raises(StoreError, match=r"answers\.sqlite3"):
        RecordingStore.open(path)
    folder = tmp_path / "folder.sqlite3"
    folder.mkdir()
    with pytest.raises(StoreError, match=r"folder\.sqlite3"):
        RecordingStore.open(folder)


def test_a_store_of_a_newer_format_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite3"
    RecordingStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer TrayProxy"):
        RecordingStore.open(path)
