"""Logging setup: a redacting handler on stderr, and for the tray a rotating file.

Every handler installed here formats through ``RedactingFormatter``, so no record, whoever
logs it (aiohttp's own loggers included), can print a key. The tray also logs to
``trayproxy.log`` in the user's log directory (a windowed app has no terminal, and a frozen
windowed build has no stderr at all: ``sys.stderr`` is None there). On POSIX that folder and
every file in it, rotated ones included, are the user's alone (0700, 0600), as the local token
file is: even redacted, the log says which APIs and paths the person's tools use, and when.

What gets logged follows the config file's ``[log]`` table (:func:`apply_log_settings`, again on
every reload); ``serve``'s ``-v`` and ``-q`` win over it.

The per-request lines are the bulk of the output, and going through ``logging`` cost about a
third of the proxy's CPU per request (a LogRecord, a lock, ``Formatter.format`` with a
``localtime``/``strftime`` per line, a write and a flush per line; the rotating file formatted
each record twice and sought to the end of the file). So:

* the access logger carries ``write_line`` (:class:`_AccessLines`), which
  ``desktop.engine.accesslog`` calls with the message: it adds the same prefix the formatter
  would (the date string is made once per second), redacts the line once and queues it on each
  handler, as long as these handlers are still the only ones that would get the record;
* every handler here buffers those lines and writes them in one go: at most
  ``FLUSH_INTERVAL_S`` later (a flusher thread, which sleeps while nothing is queued), before
  any other record (those are written at once, so lines stay in order and a warning is never
  late), on ``flush()`` and ``close()`` (``logging.shutdown`` at exit does both), and when
  ``MAX_QUEUED_LINES`` pile up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import platformdirs

from desktop.config.model import LogSettings
from desktop.redaction import RedactingFormatter, redact_text

__all__ = ["apply_log_settings", "log_dir", "setup_logging"]

log = logging.getLogger("trayproxy.logs")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FILE_NAME = "trayproxy.log"
# A tray app runs for weeks: a few files of a few MiB keep days of access lines, bounded.
LOG_FILE_BYTES = 2 * 1024 * 1024
LOG_FILE_BACKUPS = 3
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
ACCESS_LOGGER = "trayproxy.access"
# Owner-only on POSIX; older versions left the umask's 0755 / 0644, which are tightened at start.
LOG_DIR_MODE = 0o700
LOG_FILE_MODE = 0o600
# Someone tailing the log sees a request line at most this long after the request ended.
FLUSH_INTERVAL_S = 0.25
# Written at once past this many queued lines (about 40,000 requests/s): memory stays bounded.
MAX_QUEUED_LINES = 10_000


def log_dir() -> Path:
    """The user's log directory for TrayProxy (``~/.local/state/TrayProxy/log`` on Linux)."""
    return Path(platformdirs.user_log_dir("TrayProxy", appauthor=False))


def setup_logging(*, verbose: bool = False, quiet: bool = False, to_file: bool = False) -> Path | None:
    """Send log records to stderr (when there is one) and, with ``to_file``, to the rotating
    log file, whose path is returned; ``quiet`` drops the per-request lines."""
    handlers: list[_Buffered] = []
    if sys.stderr is not None:
        handlers.append(_BufferedStreamHandler(sys.stderr))
    log_file = None
    loosened: list[Path] = []
    if to_file:
        log_file = log_dir() / LOG_FILE_NAME
        loosened = _prepare_private_log(log_file)
        handlers.append(
            _BufferedRotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.flush()
        if isinstance(old, _Buffered):
            _flusher.forget(old)
    formatter = RedactingFormatter(LOG_FORMAT, DATE_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _flusher.add(handler)
    access = logging.getLogger(ACCESS_LOGGER)
    access.write_line = _AccessLines(access, handlers, formatter)  # type: ignore[attr-defined]
    apply_log_settings(LogSettings(), verbose=verbose, quiet=quiet)
    if loosened:
        log.warning("%s could be read by other users; now only you can", ", ".join(map(str, loosened)))
    return log_file


def _prepare_private_log(log_file: Path) -> list[Path]:
    """Make the log folder if need be and, on POSIX, it and the log files already there
    (rotated ones too) owner-only; create the log file owner-only before the handler opens it
    (it would take the umask's bits). Returns the paths others could read until now."""
    folder = log_file.parent
    folder.mkdir(parents=True, exist_ok=True, mode=LOG_DIR_MODE)
    if os.name != "posix":
        return []  # Windows: the user's profile folder is theirs alone already
    loosened = [path for path in (folder, log_file) if _make_owner_only(path)]
    _create_owner_only(log_file)
    loosened += [path for path in sorted(folder.glob(LOG_FILE_NAME + ".*")) if _make_owner_only(path)]
    return loosened


def _make_owner_only(path: Path) -> bool:
    """Take the group and other bits off ``path`` (a folder or a regular file); True when it had any."""
    try:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077 or not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            return False
        os.chmod(path, LOG_DIR_MODE if stat.S_ISDIR(info.st_mode) else LOG_FILE_MODE)
    except OSError:
        return False  # gone meanwhile, or not ours: the log still works
    return True


def _create_owner_only(path: Path) -> None:
    """Create ``path`` as an empty owner-only file unless it exists; no-op off POSIX."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_FILE_MODE))


def apply_log_settings(settings: LogSettings, *, verbose: bool = False, quiet: bool = False) -> None:
    """Log at ``settings.level``, with the per-request lines when ``settings.access``; ``verbose``
    (``-v``) means debug and ``quiet`` (``-q``) no request lines, whatever the file says."""
    level = LEVELS["debug" if verbose else settings.level]
    logging.getLogger().setLevel(level)
    # aiohttp logs at INFO/DEBUG about every connection; keep its warnings and errors only,
    # unless asked for debugging detail.
    logging.getLogger("aiohttp").setLevel(
        logging.DEBUG if level == logging.DEBUG else max(level, logging.WARNING)
    )
    # The request lines are INFO records; set on their own logger so that "access = true" shows
    # them at level "warning" too, and "access = false" hides them at any level.
    access = settings.access and not quiet
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access else logging.WARNING)


class _AccessLines:
    """``write_line(message)``: the access line as the handlers' formatter would print it,
    queued on each handler; False (nothing done) when other handlers, filters or formats than
    the ones installed here would see the record, and the caller must log it the usual way."""

    def __init__(
        self, logger: logging.Logger, handlers: Sequence[_Buffered], formatter: RedactingFormatter
    ) -> None:
        self._logger = logger
        # The formatter setup_logging gave the handlers: LOG_FORMAT is what it prints (a
        # Formatter keeps its format only in private fields, so it is known by who it is).
        self._formatter = formatter
        self._root = logging.getLogger()
        self._handlers = list(handlers)
        self._stamp: tuple[int, str] = (-1, "")
        # The record's fields as LOG_FORMAT shows them: "%(levelname)-7s %(name)s: ".
        self._middle = f" {logging.getLevelName(logging.INFO):<7} {logger.name}: "

    def __call__(self, message: str) -> bool:
        logger = self._logger
        if (
            self._root.handlers != self._handlers
            or logger.filters
            or logger.disabled
            or self._root.filters
            or not self._reaches_the_root_handlers_alone()
        ):
            return False
        now = time.time()
        second, prefix = self._stamp
        if int(now) != second:
            for handler in self._handlers:
                formatter = handler.formatter
                if (
                    handler.filters
                    or handler.level > logging.INFO
                    or formatter is not self._formatter
                    or formatter.datefmt != DATE_FORMAT
                ):
                    return False
            # Formatter.formatTime: localtime of the record's time (whole seconds) + strftime.
            prefix = time.strftime(DATE_FORMAT, time.localtime(now)) + self._middle
            self._stamp = (int(now), prefix)
        # The prefix (date, level, logger name) holds nothing to mask and ends in a space, so
        # no masked shape can span it and the message: redacting the message alone prints what
        # RedactingFormatter would, for half the scan.
        line = prefix + redact_text(message)
        for handler in self._handlers:
            handler.queue_line(line)
        return True


    def _reaches_the_root_handlers_alone(self) -> bool:
        """True when a record of the access logger, passed up the loggers' tree as logging
        does, meets no handler before the root's and is not stopped on the way. A logger made
        later for a name above it ("trayproxy", by anyone: a test's caplog, an embedding
        program) becomes its parent; one with no handlers changes nothing a person reads."""
        node: logging.Logger | None = self._logger
        while node is not self._root:
            if node is None or node.handlers or not node.propagate:
                return False
            node = node.parent
        return True


class _Flusher:
    """One daemon thread that writes the handlers' queued lines FLUSH_INTERVAL_S after the
    first one was queued; it waits on an event while nothing is queued."""

    def __init__(self) -> None:
        self._handlers: list[_Buffered] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.scheduled = False

    def add(self, handler: _Buffered) -> None:
        self._handlers = [*self._handlers, handler]

    def forget(self, handler: _Buffered) -> None:
        self._handlers = [h for h in self._handlers if h is not handler]

    def schedule(self) -> None:
        self.scheduled = True
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="trayproxy-log-flush", daemon=True)
                    thread.start()
                    self._thread = thread
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(FLUSH_INTERVAL_S)
            # Cleared before the queues are taken: a line queued from now on schedules again.
            self._wake.clear()
            self.scheduled = False
            for handler in self._handlers:
                handler.write_queued()


_flusher = _Flusher()


class _Buffered(logging.Handler):
    """A handler that writes access lines queued by :class:`_AccessLines` in batches, and any
    other record at once, after the lines queued before it."""

    def _setup_buffer(self) -> None:
        self._queue: deque[str] = deque()
        self._io_lock = threading.Lock()
        self._buffer_closed = False

    def queue_line(self, line: str) -> None:
        queue = self._queue
        queue.append(line)  # deque.append is atomic: no lock on the request path
        if len(queue) >= MAX_QUEUED_LINES:
            self.write_queued()
        elif not _flusher.scheduled:
            _flusher.schedule()

    def _take(self) -> list[str]:
        queue = self._queue
        return [queue.popleft() for _ in range(len(queue))]

    def write_queued(self) -> None:
        with self._io_lock:
            lines = self._take()
            if lines and not self._buffer_closed:
                # As logging.Handler.handleError, but with no record to name: the app goes on.
                with contextlib.suppress(OSError, ValueError):
                    self._write_lines(lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            with self._io_lock:
                self._write_lines([*self._take(), message])
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.write_queued()
        super().flush()

    def close(self) -> None:
        self.write_queued()
        with self._io_lock:
            self._buffer_closed = True
        _flusher.forget(self)
        super().close()

    def _write_lines(self, lines: list[str]) -> None:
        raise NotImplementedError


class _BufferedStreamHandler(_Buffered, logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO) -> None:
        logging.StreamHandler.__init__(self, stream)
        self._setup_buffer()

    def _write_lines(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class _BufferedRotatingFileHandler(_Buffered, logging.handlers.RotatingFileHandler):
    """RotatingFileHandler's files and rollover (before a line that would reach maxBytes), with
    one size check per batch instead of a seek and a second format per record."""

    def __init__(self, filename: Path, *, maxBytes: int, backupCount: int, encoding: str) -> None:
        logging.handlers.RotatingFileHandler.__init__(
            self, filename, maxBytes=maxBytes, backupCount=backupCount, encoding=encoding
        )
        self._setup_buffer()

    def rotate(self, source: str, dest: str) -> None:
        """Rename ``source`` to ``dest`` as usual, then make the next ``source`` owner-only,
        before the rollover opens it (with the umask's bits, often 0644)."""
        super().rotate(source, dest)
        _create_owner_only(Path(source))

    def _open_file(self) -> io.TextIOWrapper:
        # As FileHandler opens it (its _open is private): the handler's own file, mode, encoding.
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors)  # type: ignore[return-value]

    def _write_lines(self, lines: list[str]) -> None:
        if self.stream is None:
            self.stream = self._open_file()
        # bpo-45401, as RotatingFileHandler: only a regular file is ever rolled over.
        if self.maxBytes <= 0 or (
            os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename)
        ):
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
            return
        # Another process may append too: the size is read again once per batch.
        self.stream.seek(0, 2)
        size = self.stream.tell()
        start = 0
        for index, line in enumerate(lines):
            length = len(line) + 1
            if size + length >= self.maxBytes:
                if index > start:
                    self.stream.write("\n".join(lines[start:index]) + "\n")
                self.doRollover()
                if self.stream is None:
                    self.stream = self._open_file()
                self.stream.seek(0, 2)
                size = self.stream.tell()
                start = index
            size += length
        self.stream.write("\n".join(lines[start:]) + "\n")
        self.stream.flush()
