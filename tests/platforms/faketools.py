"""Stand-in helper programs (xdg-open, xclip, pbcopy, open) placed on a temporary PATH.

Each is a real executable script run by the real interpreter: it records its argv, stdin,
selected environment, session and stdin target to ``<name>.json`` next to itself, then exits
with the code it was given (or keeps running, or forks a child that outlives it, as xclip and
wl-copy do). Tests check our process handling with them where the real tool is not installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SCRIPT = """\
#!{python}
import json, os, sys, time
record = {{
    "argv": sys.argv[1:],
    "stdin": sys.stdin.buffer.read().decode("utf-8") if {read_stdin} else None,
    "stdin_target": os.path.realpath("/proc/self/fd/0") if os.path.exists("/proc/self/fd/0") else None,
    "sid": os.getsid(0),
    "env": {{k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "LD_LIBRARY_PATH", "DISPLAY")}},
}}
with open({record!r}, "w") as handle:
    json.dump(record, handle)
sys.stderr.write({stderr!r})
sys.stderr.flush()
if {fork_child}:
    if os.fork() == 0:
        time.sleep(5)  # like xclip: the child keeps our stdout/stderr open while it serves
        os._exit(0)
if {linger_s}:
    time.sleep({linger_s})
sys.exit({exit_code})
"""


def install_fake(
    bin_dir: Path,
    name: str,
    *,
    exit_code: int = 0,
    read_stdin: bool = False,
    stderr: str = "",
    fork_child: bool = False,
    linger_s: float = 0,
) -> Path:
    """Write an executable ``name`` into ``bin_dir``; returns the path of its record file."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = bin_dir / f"{name}.json"
    script = bin_dir / name
    script.write_text(
        SCRIPT.format(
            python=sys.executable,
            read_stdin=read_stdin,
            record=str(record),
            stderr=stderr,
            fork_child=fork_child,
            linger_s=linger_s,
            exit_code=exit_code,
        )
    )
    script.chmod(0o755)
    return record


def read_record(record: Path) -> dict[str, object]:
    """What the fake saw."""
    data = json.loads(record.read_text())
    assert isinstance(data, dict)
    return data


def path_only(bin_dir: Path) -> dict[str, str]:
    """An environment whose PATH holds only ``bin_dir`` (so no real tool is found)."""
    return {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "")}
