"""The inspector's way in: one-time codes, the session file ``trayproxy inspect`` reads, and the
opener file the browser is given instead of the code.

What a person would notice if these slipped: a link copied from a terminal or a leftover opener
file opening the inspector for someone else later (a code good twice, or for ever); another
user of the machine reading the secret (a session file or opener readable by others); a code in
``ps`` (the opener carries it, the browser is only given the file's path).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from desktop.inspector.access import (
    CODE_LIFETIME_S,
    MAX_OUTSTANDING_CODES,
    InspectorAccess,
    InspectorSession,
    read_session_file,
    remove_session_file,
    write_opener,
    write_session_file,
)


class Clock:
    """A monotonic clock the test moves (the codes' expiry is all it drives)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_code_opens_once_and_never_again() -> None:
    access = InspectorAccess()
    code = access.issue_code()
    assert access.redeem(code) is True
    assert access.redeem(code) is False


def test_an_unknown_or_empty_code_opens_nothing() -> None:
    access = InspectorAccess()
    code = access.issue_code()
    assert access.redeem("") is False
    assert access.redeem(code[:-1]) is False
    assert access.redeem(code + "x") is False
    assert access.redeem("\udcff" + code) is False  # a surrogate from a malformed query
    assert access.redeem(code) is True


def test_a_code_expires_after_two_minutes() -> None:
    """A link left in a terminal, or an opener file, is dead soon after it was made."""
    clock = Clock()
    access = InspectorAccess(clock=clock)
    late, in_time = access.issue_code(), access.issue_code()
    clock.now += CODE_LIFETIME_S - 1
    assert access.redeem(in_time) is True
    clock.now += 1
    assert access.redeem(late) is False


def test_codes_waiting_are_bounded_and_the_oldest_goes_first() -> None:
    access = InspectorAccess()
    codes = [access.issue_code() for _ in range(MAX_OUTSTANDING_CODES + 3)]
    assert [access.redeem(code) for code in codes[:3]] == [False] * 3
    assert all(access.redeem(code) for code in codes[3:])


def test_each_run_has_its_own_secret_and_neither_repr_shows_it(tmp_path: Path) -> None:
    first, second = InspectorAccess(), InspectorAccess()
    assert first.secret != second.secret
    assert len(first.secret) >= 43  # 32 random bytes, URL-safe base64
    assert first.secret not in repr(first)
    write_session_file(tmp_path, "127.0.0.1", 8000, first)
    session = read_session_file(tmp_path)
    assert session is not None
    assert first.secret not in repr(session)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_the_session_file_is_private_and_says_where_the_inspector_is(tmp_path: Path) -> None:
    """Only the person's own processes can read the secret: 0600 in a 0700 folder."""
    directory = tmp_path / "runtime"
    access = InspectorAccess()
    path = write_session_file(directory, "::1", 8123, access)
    assert mode(directory) == 0o700
    assert mode(path) == 0o600
    session = read_session_file(directory)
    assert session == InspectorSession(
        host="::1", port=8123, secret=access.secret, pid=session.pid if session else 0, path=access.page_path
    )
    assert session is not None
    assert session.page_url == f"http://[::1]:8123{access.page_path}"
    assert session.open_url("abc") == "http://[::1]:8123/__trayproxy/inspector/open?code=abc"
    assert json.loads(path.read_text())["secret"] == access.secret


def test_a_session_file_is_removed_only_by_the_run_that_wrote_it(tmp_path: Path) -> None:
    """Two TrayProxys in turn: the first one's exit must not take away the second one's file."""
    first, second = InspectorAccess(), InspectorAccess()
    write_session_file(tmp_path, "127.0.0.1", 8000, first)
    write_session_file(tmp_path, "127.0.0.1", 8001, second)
    remove_session_file(tmp_path, first)
    session = read_session_file(tmp_path)
    assert session is not None
    assert session.port == 8001
    remove_session_file(tmp_path, second)
    assert read_session_file(tmp_path) is None


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"host": "127.0.0.1", "port": "8000", "secret": "s", "pid": 1}']
)
def test_a_broken_session_file_reads_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "inspector.json").write_text(text)
    assert read_session_file(tmp_path) is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_the_opener_is_private_redirects_to_the_link_and_replaces_the_last_one(tmp_path: Path) -> None:
    tmp_path = tmp_path / "runtime"
    url = "http://127.0.0.1:8000/__trayproxy/inspector/open?code=a-b_c&x=<y>"
    first = write_opener(tmp_path, url)
    second = write_opener(tmp_path, url.replace("a-b_c", "d"))
    assert not first.exists()
    assert mode(second) == 0o600
    page = second.read_text()
    escaped = "http://127.0.0.1:8000/__trayproxy/inspector/open?code=d&amp;x=&lt;y&gt;"
    assert f'content="0; url={escaped}"' in page
    assert f'href="{escaped}"' in page
    access = InspectorAccess()
    write_session_file(tmp_path, "127.0.0.1", 8000, access)
    remove_session_file(tmp_path, access)
    assert list(tmp_path.iterdir()) == []


def test_each_run_has_a_page_path_of_its_own() -> None:
    """Browsers send a cookie to every port of a host: scoped to a path each run makes anew,
    the inspector's cookie goes to no page another program serves on another port."""
    first, second = InspectorAccess(), InspectorAccess()
    assert first.page_path.startswith("/__trayproxy/inspector/")
    assert first.page_path.endswith("/")
    assert first.page_path != second.page_path
    assert len(first.page_path) >= len("/__trayproxy/inspector/") + 20
