"""``trayproxy inspect``: open the running TrayProxy's inspector, or export what it holds.

The running TrayProxy (tray or ``serve``) writes a session file in the runtime directory (0600:
its port and the inspector's secret, desktop/inspector/access.py). This command reads it and,
with the secret as the inspector's cookie, asks that TrayProxy over loopback HTTP for a one-time
code, then gives the browser a 0600 opener file that sends it to the one-time link: the code
never appears in the process list, and the link works once, for two minutes. ``--url`` prints
the link instead; ``--har FILE`` and ``--jsonl FILE`` write an export (atomically, 0600: it
holds prompts) without a browser.

The HTTP client is the standard library's, talking to the address in the file only: no proxy
variables are read (the request carries the secret), no DNS.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import webbrowser
from dataclasses import dataclass
from pathlib import Path

from desktop.atomicfile import write_bytes_atomically
from desktop.inspector.access import (
    COOKIE_NAME,
    InspectorSession,
    read_session_file,
    write_opener,
)
from desktop.platforms.instance import instance_dir

__all__ = ["InspectFailed", "run_inspect"]

# A loopback answer takes milliseconds; an export of a full body ring (64 MiB by default, more
# when configured) is turned into JSON first, which takes seconds on a slow machine.
ASK_TIMEOUT_S = 10.0
EXPORT_TIMEOUT_S = 120.0
# What the inspector asks of a request besides the cookie: the Fetch Metadata of its own page.
# Browsers set these themselves and pages cannot; this process holds the secret, so it is the
# person's own (a process of the same user can read the session file anyway).
PAGE_HEADERS = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
NOT_RUNNING = (
    "No TrayProxy with its inspector on is running for this user (no session file in {directory}).\n"
    "Start TrayProxy (from the menu, or trayproxy serve) and run this again; if it runs, check that"
    " [inspector] enabled is not false in its config file."
)


class InspectFailed(Exception):
    """Why the running TrayProxy's inspector could not be reached; the message says so."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def run_inspect(args: argparse.Namespace, *, directory: Path | None = None) -> int:
    """Open the inspector (or print its link, or write an export); the exit status."""
    directory = instance_dir()[0] if directory is None else directory
    session = read_session_file(directory)
    if session is None:
        print(NOT_RUNNING.format(directory=directory), file=sys.stderr)
        return 1
    try:
        wrote = False
        for name, destination in (("export.har", args.har), ("export.jsonl", args.jsonl)):
            if destination is not None:
                export(session, name, destination)
                wrote = True
        if wrote:
            return 0
        url = session.open_url(ask_code(session))
    except InspectFailed as failed:
        print(f"trayproxy inspect: {failed}", file=sys.stderr)
        return 1
    if args.url:
        print(url)
        print("The link opens the inspector once, within 2 minutes.", file=sys.stderr)
        return 0
    opener = write_opener(directory, url)
    if not webbrowser.open(opener.as_uri()):
        print(
            f"No browser could be started. Open this link within 2 minutes (it works once):\n{url}",
            file=sys.stderr,
        )
        return 1
    print(f"Opened the TrayProxy inspector in your browser ({session.page_url}).", file=sys.stderr)
    return 0


def ask_code(session: InspectorSession) -> str:
    """A one-time code from the running TrayProxy."""
    answer = request(session, "POST", "api/code", ASK_TIMEOUT_S)
    try:
        code = json.loads(answer.body)["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if not isinstance(code, str):
        raise InspectFailed(f"{session.base_url} did not answer as a TrayProxy inspector does")
    return code


def export(session: InspectorSession, name: str, destination: str) -> None:
    """Write the export ``name`` (all exchanges held) to ``destination`` ("-": stdout)."""
    answer = request(session, "GET", name, EXPORT_TIMEOUT_S)
    if destination == "-":
        sys.stdout.buffer.write(answer.body)
        sys.stdout.flush()
        return
    path = Path(destination).expanduser()
    try:
        # 0600 for a new file: an export holds prompts and answers.
        write_bytes_atomically(path, answer.body, new_mode=0o600)
    except OSError as exc:
        raise InspectFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
    lines = answer.body.count(b"\n") if name.endswith("jsonl") else None
    what = f"{lines} requests" if lines is not None else f"{len(answer.body)} bytes"
    print(f"Wrote {path} ({what}).", file=sys.stderr)


def request(session: InspectorSession, method: str, name: str, timeout_s: float) -> Answer:
    """``method`` on the inspector's ``name``, as its own page would ask; an answer of 200."""
    connection = http.client.HTTPConnection(session.host, session.port, timeout=timeout_s)
    headers = {**PAGE_HEADERS, "Cookie": f"{COOKIE_NAME}={session.secret}"}
    try:
        connection.request(method, session.path + name, headers=headers)
        response = connection.getresponse()
        answer = Answer(response.status, response.read())
    except ConnectionRefusedError as exc:
        raise InspectFailed(
            f"no TrayProxy answers at {session.base_url}: it has stopped (its session file is left "
            "from a run that ended). Start TrayProxy and run this again."
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise InspectFailed(f"{session.base_url} did not answer: {exc}") from exc
    finally:
        connection.close()
    if answer.status == 200:
        return answer
    if answer.status == 403:
        raise InspectFailed(
            f"the TrayProxy at {session.base_url} refused this session: it is not the one that "
            "wrote the session file (restarted?). Run this again in a moment."
        )
    if answer.status == 404:
        raise InspectFailed(
            f"the TrayProxy at {session.base_url} runs without the inspector "
            "([inspector] enabled = false, or serve --no-inspector)"
        )
    raise InspectFailed(f"{session.base_url} answered {answer.status}")
