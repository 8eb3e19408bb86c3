"""A tiny app using the single-instance lock; the instance tests run it as real processes.

``python instance_app.py [DIR]``: prints ``instance held=<bool> port=<n>`` and waits for stdin
to close, printing ``activated`` whenever a later launch asks it to show itself; or prints
``told`` and exits 3 when another copy holds the lock. Without DIR the default directory is used.
"""

from __future__ import annotations

import sys
from pathlib import Path

from desktop.platforms.instance import acquire

ALREADY_RUNNING_EXIT = 3


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    lock = acquire(lambda: print("activated", flush=True), directory=directory)
    if lock is None:
        print("told", flush=True)
        return ALREADY_RUNNING_EXIT
    print(f"instance held={lock.held} port={lock.port} dir={lock.directory} reason={lock.reason}", flush=True)
    sys.stdin.read()
    lock.release()
    print("released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
