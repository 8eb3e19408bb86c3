"""The export format: what goes out comes back the same, and a bad file is refused whole."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from recorded import chat_exchange

from desktop.cache import RecordingFormatError, RecordingStore, export_to, import_from

MIB = 1024 * 1024


def test_an_export_imported_into_a_fresh_store_gives_the_same_recordings(tmp_path: Path) -> None:
    """The CI recipe: export, commit the file, import on another machine."""
    originals = [
        chat_exchange("a", recorded_at=1000.5),
        chat_exchange("b", answer="h\u00e9llo \u2603".encode(), pieces=4, recorded_at=1001.0),
        chat_exchange("c", answer=b"\x1f\x8b\x08\x00binary", pieces=2, recorded_at=1002.0),
    ]
    with RecordingStore.open(tmp_path / "one.sqlite3") as one:
        for exchange in originals:
            one.put(exchange, max_bytes=MIB)
        out = io.StringIO()
        assert export_to(one, out) == 3
    text = out.getvalue()
    assert text.isascii()
    lines = text.splitlines()
    assert all(json.loads(line)["format"] == "trayproxy-recording" for line in lines)
    assert all(json.loads(line)["version"] == 1 for line in lines)
    exported = tmp_path / "recording.jsonl"
    exported.write_text(text)
    with RecordingStore.open(tmp_path / "two.sqlite3") as two:
        assert import_from(two, exported) == 3
        assert list(two.exchanges()) == originals


def test_a_bad_line_names_its_number_and_nothing_is_imported(tmp_path: Path) -> None:
    with RecordingStore.open(tmp_path / "one.sqlite3") as one:
        one.put(chat_exchange("a"), max_bytes=MIB)
        one.put(chat_exchange("b"), max_bytes=MIB)
        out = io.StringIO()
        export_to(one, out)
    good, second = out.getvalue().splitlines()
    broken = json.loads(second)
    broken["response"]["status"] = "200"
    text = "\n".join([good, "", json.dumps(broken)]) + "\n"
    with RecordingStore.open(tmp_path / "two.sqlite3") as two:
        with pytest.raises(RecordingFormatError) as caught:
            import_from(two, io.StringIO(text))
        assert caught.value.line == 3
        assert "response.status" in caught.value.problem
        assert two.stats().entries == 0
