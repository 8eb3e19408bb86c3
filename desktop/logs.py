"""Logging setup: one redacting handler on stderr for the headless command.

Every handler installed here formats through ``RedactingFormatter``, so no record, whoever
logs it (aiohttp's own loggers included), can print a key. The tray's rotating log file
(issue 5) is added here too.
"""

from __future__ import annotations

import logging
import sys

from desktop.engine.redact import RedactingFormatter

__all__ = ["setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Send log records to stderr, redacted; ``quiet`` drops the per-request lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp logs at INFO/DEBUG about every connection; keep its warnings and errors only.
    logging.getLogger("aiohttp").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if quiet:
        logging.getLogger("trayproxy.access").setLevel(logging.WARNING)
