"""Which program listens on a TCP port, for the message a taken port gets.

"Port 8001 is already in use" leaves a person hunting; "... held by node (pid 4242)" does not.
Linux tells through procfs: ``/proc/net/tcp`` and ``tcp6`` list listening sockets with their
port, owner uid and inode, and ``/proc/PID/fd`` links name the inode (``socket:[INODE]``) of
every socket a process holds. Another user's process cannot be looked into without root, so
then only its user is named. Elsewhere (macOS, Windows) the answer is None and the message
stays as it was: ``lsof`` or ``netstat`` would mean a subprocess and parsing per OS version.

Best effort: any read that fails (a process exiting mid-scan, no procfs) is skipped, never raised.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

__all__ = ["port_holder"]

PROC = Path("/proc")
# The state column of /proc/net/tcp: 0A is TCP_LISTEN (include/net/tcp_states.h).
TCP_LISTEN = "0A"


def port_holder(port: int, *, proc: Path = PROC) -> str | None:
    """``"nc (pid 4242)"`` for the process listening on TCP ``port`` (any address, IPv4 or
    IPv6), ``"a program of user postgres"`` when it is not ours to look into, None when the OS
    does not say (no procfs) or nothing listens there."""
    sockets = _listening_sockets(port, proc)
    if not sockets:
        return None
    holders = _processes_holding(set(sockets), proc)
    if holders:
        return ", ".join(f"{name} (pid {pid})" for pid, name in holders)
    users = sorted({_user_name(uid) for uid in sockets.values()})
    return "a program of user " + " or ".join(users)


def _listening_sockets(port: int, proc: Path) -> dict[str, int]:
    """Inode -> owner uid of each socket listening on ``port``."""
    found: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            local_port = fields[1].rpartition(":")[2]
            with contextlib.suppress(ValueError):
                if int(local_port, 16) == port and fields[9] != "0":
                    found[fields[9]] = int(fields[7])
    return found


def _processes_holding(inodes: set[str], proc: Path) -> list[tuple[int, str]]:
    """(pid, command name) of every process with one of ``inodes`` among its descriptors."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders: list[tuple[int, str]] = []
    try:
        pids = sorted(int(entry.name) for entry in os.scandir(proc) if entry.name.isdigit())
    except OSError:
        return holders
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if link in wanted:
                holders.append((pid, _command_name(pid, proc)))
                break
    return holders


def _command_name(pid: int, proc: Path) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip() or "a program"
    except OSError:
        return "a program"


def _user_name(uid: int) -> str:
    if sys.platform == "win32":  # no user database to ask (and no /proc that gives a uid)
        return f"uid {uid}"
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
