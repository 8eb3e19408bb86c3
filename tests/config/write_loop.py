"""Helper for test_writes.py: switch the active target of one config file back and forth forever.

Run as ``python write_loop.py CONFIG FIRST SECOND``; it stops only when killed. Before each
temporary file is made (the start of a write's critical part) it writes one byte to stdout, so
the test can aim its kill at the moments that matter instead of at tomlkit's parsing. That byte
is the only thing added; every write goes through the real ``set_active_target`` to a real file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from desktop.config.store import set_active_target

_real_mkstemp = tempfile.mkstemp


def _announcing_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
    os.write(sys.stdout.fileno(), b"w")
    return _real_mkstemp(*args, **kwargs)


def main() -> None:
    path, first, second = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    tempfile.mkstemp = _announcing_mkstemp  # type: ignore[assignment]
    names = (first, second)
    turn = 0
    while True:
        set_active_target(path, names[turn % 2])
        turn += 1


if __name__ == "__main__":
    main()
