"""Logging setup: a redacting handler on stderr, and for the tray a rotating file.

Every handler installed here formats through ``RedactingFormatter``, so no record, whoever
logs it (aiohttp's own loggers included), can print a key. The tray also logs to
``trayproxy.log`` in the user's log directory (a windowed app has no terminal, and a frozen
windowed build has no stderr at all: ``sys.stderr`` is None there).

What gets logged follows the config file's ``[log]`` table (:func:`apply_log_settings`, again on
every reload); ``serve``'s ``-v`` and ``-q`` win over it.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import platformdirs

from desktop.config.model import LogSettings
from desktop.engine.redact import RedactingFormatter

__all__ = ["apply_log_settings", "log_dir", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FILE_NAME = "trayproxy.log"
# A tray app runs for weeks: a few files of a few MiB keep days of access lines, bounded.
LOG_FILE_BYTES = 2 * 1024 * 1024
LOG_FILE_BACKUPS = 3
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
ACCESS_LOGGER = "trayproxy.access"


def log_dir() -> Path:
    """The user's log directory for TrayProxy (``~/.local/state/TrayProxy/log`` on Linux)."""
    return Path(platformdirs.user_log_dir("TrayProxy", appauthor=False))


def setup_logging(*, verbose: bool = False, quiet: bool = False, to_file: bool = False) -> Path | None:
    """Send log records to stderr (when there is one) and, with ``to_file``, to the rotating
    log file, whose path is returned; ``quiet`` drops the per-request lines."""
    handlers: list[logging.Handler] = []
    if sys.stderr is not None:
        handlers.append(logging.StreamHandler(sys.stderr))
    log_file = None
    if to_file:
        log_file = log_dir() / LOG_FILE_NAME
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    apply_log_settings(LogSettings(), verbose=verbose, quiet=quiet)
    return log_file


def apply_log_settings(settings: LogSettings, *, verbose: bool = False, quiet: bool = False) -> None:
    """Log at ``settings.level``, with the per-request lines when ``settings.access``; ``verbose``
    (``-v``) means debug and ``quiet`` (``-q``) no request lines, whatever the file says."""
    level = LEVELS["debug" if verbose else settings.level]
    logging.getLogger().setLevel(level)
    # aiohttp logs at INFO/DEBUG about every connection; keep its warnings and errors only,
    # unless asked for debugging detail.
    logging.getLogger("aiohttp").setLevel(logging.DEBUG if level == logging.DEBUG else max(level, logging.WARNING))
    # The request lines are INFO records; set on their own logger so that "access = true" shows
    # them at level "warning" too, and "access = false" hides them at any level.
    access = settings.access and not quiet
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access else logging.WARNING)
