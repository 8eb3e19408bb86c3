"""A thread that follows the config file: it runs the work handed to it and notices saves.

Once every ``poll_s`` (or as soon as work arrives) it runs the queued jobs, then calls
``tick(changed)``, ``changed`` being True when one of the watched files was saved since the last
look. A stat and a small read a second cost nothing; inotify/FSEvents would need a dependency
per OS for no visible gain. What a change or a tick means is the caller's business.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["CONFIG_POLL_S", "FileWatch", "file_signature"]

log = logging.getLogger("trayproxy.controller")

# How often the watcher looks at the files: edits apply within this.
CONFIG_POLL_S = 1.0
# The largest file whose bytes are read to notice a save; a config file is a few KiB.
MAX_DIGESTED_BYTES = 1024 * 1024
_STOP = object()


class FileWatch:
    """Follows ``paths`` in a daemon thread; :meth:`put` hands it a job, :meth:`close` ends it."""

    def __init__(
        self,
        paths: Sequence[Path],
        tick: Callable[[bool], None],
        *,
        poll_s: float = CONFIG_POLL_S,
        name: str = "trayproxy-config",
    ) -> None:
        self._paths = tuple(paths)
        self._tick = tick
        self._poll_s = poll_s
        self._jobs: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # Taken now, so a save between making the watch and its first look is not missed.
        self._seen = self._signatures()

    def start(self) -> None:
        self._thread.start()

    def put(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the watcher's thread, soon (in order with the other jobs)."""
        self._jobs.put(job)

    def close(self, timeout: float) -> None:
        """Stop after the job under way, waiting for it up to ``timeout``."""
        self._jobs.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _signatures(self) -> tuple[tuple[int, int, int, bytes] | None, ...]:
        return tuple(file_signature(path) for path in self._paths)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._poll_s)
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            try:
                if callable(job):
                    job()
                current = self._signatures()
                changed, self._seen = current != self._seen, current
                self._tick(changed)
            except Exception:
                log.exception("config watcher job failed")


def file_signature(path: Path) -> tuple[int, int, int, bytes] | None:
    """What changes when the file is saved: time, size and inode (an atomic rename changes
    the inode), and a digest of the bytes, for an in-place save of the same length on a file
    system whose timestamps are too coarse to move (FAT: 2 s, HFS+: 1 s). The file is small;
    reading it once a second costs next to nothing. Only a regular file of a config's size is
    read: a FIFO or a device put in its place (a link to /dev/zero) would block the watcher
    or fill memory, and is told apart by its time, size and inode alone."""
    try:
        info = os.stat(path)
        readable = stat.S_ISREG(info.st_mode) and info.st_size <= MAX_DIGESTED_BYTES
        digest = hashlib.blake2b(path.read_bytes(), digest_size=16).digest() if readable else b""
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino, digest)
