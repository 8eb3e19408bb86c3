"""Recorded answers (issue 16): the opt-in request cache and offline replay.

- key.py: which requests count as the same (the base key, Vary);
- store.py: the SQLite file (RecordingStore: one row per exchange, LRU under a cap);
- exchange.py: the JSONL export and its checked import (docs/recordings.md);
- recordings.py: ``Recordings``, the engine's AnswerRecall (engine/recall.py), with its one
  worker thread that alone touches the file.

Row 4 (STYLE.md section 1): imports the engine's recall and capture interfaces, the config's
model and store (the app's name), and the redactor; never the controller or the tray.
"""

from desktop.cache.exchange import RecordingFormatError, export_to, import_from
from desktop.cache.recordings import Recordings
from desktop.cache.store import (
    RecordedExchange,
    RecordingStore,
    StoreError,
    StoreStats,
    TargetStats,
    default_store_path,
)

__all__ = [
    "RecordedExchange",
    "RecordingFormatError",
    "RecordingStore",
    "Recordings",
    "StoreError",
    "StoreStats",
    "TargetStats",
    "default_store_path",
    "export_to",
    "import_from",
]
