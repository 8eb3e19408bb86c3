"""The access log's fast path (desktop/logs.py, desktop/engine/accesslog.py): the same lines as
the plain logging path, redacted, in order, written within a second and all of them at exit.

Access lines skip the LogRecord and formatter and are written in batches (issue 7: they cost a
third of the proxy's CPU per request); nothing a person reads may change because of it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from background import BackgroundServer, free_port, wait_until
from listen_helpers import is_listening
from upstreams import echo_app

from desktop import logs
from desktop.engine.accesslog import ACCESS_LOGGER, log_request
from desktop.engine.forward import RequestRecord
from desktop.redaction import RedactingFormatter, register_secrets

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
SECRET = "sk-thisisasecretkey0123456789"
REGISTERED = "custom-secret-value-98765"


class FakeRequest:
    def __init__(self, raw_path: str, method: str = "GET", remote: str | None = "127.0.0.1") -> None:
        self.raw_path = raw_path
        self.method = method
        self.remote = remote


def record(status: int = 200, size: int = 12, note: str = "") -> RequestRecord:
    rec = RequestRecord()
    rec.status = status
    rec.bytes_down = size
    rec.first_byte_at = 10.0012
    rec.note = note
    return rec


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """setup_logging() onto a StringIO stderr; the root logger is put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, ACCESS_LOGGER.level, logging.getLogger("aiohttp").level)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.setup_logging()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    ACCESS_LOGGER.setLevel(saved[2])
    logging.getLogger("aiohttp").setLevel(saved[3])
    if hasattr(ACCESS_LOGGER, "write_line"):
        del ACCESS_LOGGER.write_line


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def plain_line(message: str) -> str:
    """What the plain logging path (RedactingFormatter on a LogRecord) prints, stamp removed."""
    rec = ACCESS_LOGGER.makeRecord(ACCESS_LOGGER.name, logging.INFO, __file__, 0, message, (), None)
    return re.sub(f"^{STAMP}", "", RedactingFormatter(logs.LOG_FORMAT, logs.DATE_FORMAT).format(rec))


def test_access_line_format_is_the_formatters(stderr: io.StringIO) -> None:
    """Byte for byte what RedactingFormatter would print, date included."""
    before = time.strftime(logs.DATE_FORMAT)
    log_request(FakeRequest("/v1/models?x=1"), record(), started=10.0, ended=10.0034)
    log_request(FakeRequest("/a", "POST", None), record(502, 0, "upstream refused"), started=10.0, ended=10.5)
    flush()
    after = time.strftime(logs.DATE_FORMAT)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    expected = [
        ' INFO    trayproxy.access: 127.0.0.1 "GET /v1/models?x=1" 200 12 ttfb=0.001s 0.003s',
        ' INFO    trayproxy.access: - "POST /a" 502 0 ttfb=0.001s 0.500s [upstream refused]',
    ]
    for line, tail in zip(lines, expected, strict=True):
        assert before <= line[:19] <= after
        assert line[19:] == tail
        assert line[19:] == plain_line(tail.split(": ", 1)[1])


def test_access_lines_are_redacted(stderr: io.StringIO) -> None:
    register_secrets([REGISTERED])
    log_request(FakeRequest(f"/v1/chat?key={SECRET}"), record(), started=10.0, ended=10.1)
    log_request(FakeRequest(f"/keys/{SECRET}/x"), record(), started=10.0, ended=10.1)
    log_request(FakeRequest(f"/custom/{REGISTERED}"), record(), started=10.0, ended=10.1)
    log_request(FakeRequest("/p"), record(note=f"Authorization: Bearer {SECRET}"), started=10.0, ended=10.1)
    flush()
    out = stderr.getvalue()
    assert out.count("\n") == 4
    assert SECRET not in out
    assert "thisisasecret" not in out
    assert REGISTERED not in out
    assert "key=***" in out
    for line in out.splitlines():
        message = line.split("trayproxy.access: ", 1)[1]
        assert line[19:] == plain_line(message)


def test_lines_stay_in_order_with_other_records(stderr: io.StringIO) -> None:
    other = logging.getLogger("trayproxy.test")
    log_request(FakeRequest("/1"), record(), started=10.0, ended=10.1)
    other.info("between 1 and 2")
    log_request(FakeRequest("/2"), record(), started=10.0, ended=10.1)
    log_request(FakeRequest("/3"), record(), started=10.0, ended=10.1)
    other.warning("after 3")  # written at once, with the lines queued before it
    assert [line.split(": ", 1)[1] for line in stderr.getvalue().splitlines()] == [
        '127.0.0.1 "GET /1" 200 12 ttfb=0.001s 0.100s',
        "between 1 and 2",
        '127.0.0.1 "GET /2" 200 12 ttfb=0.001s 0.100s',
        '127.0.0.1 "GET /3" 200 12 ttfb=0.001s 0.100s',
        "after 3",
    ]


def test_a_line_is_written_within_a_second_without_any_flush(stderr: io.StringIO) -> None:
    log_request(FakeRequest("/tail-me"), record(), started=10.0, ended=10.1)
    assert wait_until(lambda: "/tail-me" in stderr.getvalue(), timeout_s=1.0, interval_s=0.02)


def test_lines_from_many_threads_are_all_written(stderr: io.StringIO) -> None:
    def burst(n: int) -> None:
        for i in range(500):
            log_request(FakeRequest(f"/t{n}/{i}"), record(), started=10.0, ended=10.1)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flush()
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2000
    for n in range(4):
        paths = [line.split('"GET ')[1].split('"')[0] for line in lines if f"/t{n}/" in line]
        assert paths == [f"/t{n}/{i}" for i in range(500)]


def test_another_handler_still_gets_the_records(
    stderr: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler added after setup_logging (caplog here) sees access records: the fast path
    steps aside for the usual LogRecord path."""
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER.name):
        log_request(FakeRequest(f"/seen?key={SECRET}"), record(), started=10.0, ended=10.1)
    assert [r.getMessage() for r in caplog.records] == [
        '127.0.0.1 "GET /seen?key=***" 200 12 ttfb=0.001s 0.100s'
    ]
    flush()
    assert "/seen?key=***" in stderr.getvalue()


@contextlib.contextmanager
def only_the_installed_handler(stderr: io.StringIO) -> Iterator[logging.Handler]:
    """The root logger with setup_logging's handler alone: pytest's own capturing handlers on
    it would switch the fast path off."""
    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if getattr(h, "stream", None) is stderr]
    others = [h for h in root.handlers if h is not handler]
    for other in others:
        root.removeHandler(other)
    try:
        yield handler
    finally:
        for other in others:
            root.addHandler(other)


def test_a_handler_given_another_format_prints_access_lines_in_it(stderr: io.StringIO) -> None:
    """A formatter set on the handler after setup_logging (another program embedding the
    proxy, a debugging session) decides how access lines look: the fast path steps aside."""
    with only_the_installed_handler(stderr) as handler:
        installed = handler.formatter
        handler.setFormatter(RedactingFormatter("%(name)s | %(message)s"))
        log_request(FakeRequest(f"/other?key={SECRET}"), record(), started=10.0, ended=10.1)
        handler.setFormatter(installed)
        assert ACCESS_LOGGER.write_line("the fast path again")
    flush()
    first, second = stderr.getvalue().splitlines()
    assert first == 'trayproxy.access | 127.0.0.1 "GET /other?key=***" 200 12 ttfb=0.001s 0.100s'
    assert second.endswith(" INFO    trayproxy.access: the fast path again")


def test_a_logger_made_above_the_access_logger_leaves_the_fast_path_on_and_gets_its_lines(
    stderr: io.StringIO,
) -> None:
    """A ``trayproxy`` logger made by anyone after setup_logging (pytest's caplog for it did, in
    the full run) sits between the access logger and the root. Without handlers it changes
    nothing, so the fast path stays on; a handler on it gets every access line, and when it
    stops propagation the root's handlers get none, as the plain logging path would do."""
    parent = logging.getLogger("trayproxy")
    assert ACCESS_LOGGER.parent is parent
    seen = io.StringIO()
    on_the_parent = logging.StreamHandler(seen)
    with only_the_installed_handler(stderr):
        assert ACCESS_LOGGER.write_line("fast under a parent logger")
        ACCESS_LOGGER.disabled = True  # as logging.config does to loggers it was not told of
        try:
            log_request(FakeRequest("/disabled"), record(), started=10.0, ended=10.1)
        finally:
            ACCESS_LOGGER.disabled = False
        parent.addHandler(on_the_parent)
        try:
            log_request(FakeRequest("/to-both"), record(), started=10.0, ended=10.1)
            parent.propagate = False
            log_request(FakeRequest("/to-the-parent-only"), record(), started=10.0, ended=10.1)
        finally:
            parent.removeHandler(on_the_parent)
            parent.propagate = True
    flush()
    assert seen.getvalue().splitlines() == [
        '127.0.0.1 "GET /to-both" 200 12 ttfb=0.001s 0.100s',
        '127.0.0.1 "GET /to-the-parent-only" 200 12 ttfb=0.001s 0.100s',
    ]
    lines = stderr.getvalue().splitlines()
    assert [line[19:] for line in lines] == [
        " INFO    trayproxy.access: fast under a parent logger",
        ' INFO    trayproxy.access: 127.0.0.1 "GET /to-both" 200 12 ttfb=0.001s 0.100s',
    ]


def test_quiet_writes_no_access_line(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)  # pytest swaps sys.stderr between setup and call
    logs.setup_logging(quiet=True)
    logging.getLogger("trayproxy.test").info("still here")
    log_request(FakeRequest("/hidden"), record(), started=10.0, ended=10.1)
    flush()
    assert "/hidden" not in stderr.getvalue()
    assert "still here" in stderr.getvalue()


def test_log_file_rotates_and_keeps_every_line(
    stderr: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "log_dir", lambda: tmp_path / "logdir")
    monkeypatch.setattr(logs, "LOG_FILE_BYTES", 4000)
    monkeypatch.setattr(logs, "LOG_FILE_BACKUPS", 50)
    monkeypatch.setattr(sys, "stderr", stderr)  # pytest swaps sys.stderr between setup and call
    log_file = logs.setup_logging(to_file=True)
    assert log_file is not None
    register_secrets([REGISTERED])
    for i in range(200):
        log_request(FakeRequest(f"/r/{i}?key={SECRET}&x={REGISTERED}"), record(), started=10.0, ended=10.1)
        if i % 50 == 0:
            logging.getLogger("trayproxy.test").warning("warning %d", i)
    flush()
    backups = sorted(log_file.parent.glob("trayproxy.log.*"), key=lambda p: -int(p.suffix[1:]))
    files = [*backups, log_file]  # oldest first
    assert len(files) > 3
    text = "".join(p.read_text(encoding="utf-8") for p in files)
    for p in files:
        assert p.stat().st_size < 4000
    paths = [line.split('"GET ')[1].split("?")[0] for line in text.splitlines() if '"GET ' in line]
    assert paths == [f"/r/{i}" for i in range(200)]
    assert text.count("WARNING trayproxy.test: warning") == 4
    assert SECRET not in text
    assert REGISTERED not in text
    assert text == stderr.getvalue()


# -- a real `trayproxy serve`, stopped by a signal right after a burst of requests ----------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_writes_every_line_before_it_exits(sig: signal.Signals) -> None:
    with BackgroundServer(echo_app()) as upstream:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "desktop", "serve", "--target", upstream.url, "--port", str(port)],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        try:
            assert wait_until(lambda: is_listening(port), timeout_s=15.0), "serve did not listen"
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
                for i in range(100):
                    assert client.get(f"/burst/{i}?key={SECRET}").status_code == 200
            proc.send_signal(sig)  # well within FLUSH_INTERVAL_S of the last request
            _, err = proc.communicate(timeout=20.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    access = [line for line in err.splitlines() if "trayproxy.access:" in line]
    assert [line.split('"GET ')[1].split("?")[0] for line in access] == [f"/burst/{i}" for i in range(100)]
    for line in access:
        assert re.fullmatch(
            f'{STAMP} INFO    trayproxy.access: 127\\.0\\.0\\.1 "GET /burst/\\d+\\?key=\\*\\*\\*" '
            f"-> {re.escape(upstream.url)} 200 \\d+ "
            r"ttfb=\d+\.\d{3}s \d+\.\d{3}s",
            line,
        ), line
    assert SECRET not in err
    assert err.rstrip().endswith("stopped")


def test_queued_lines_are_written_at_interpreter_exit() -> None:
    """No other record follows the last access lines: logging.shutdown (atexit) writes them."""
    code = (
        "import sys\n"
        "from desktop.logs import setup_logging\n"
        "from desktop.engine.accesslog import ACCESS_LOGGER\n"
        "setup_logging()\n"
        "for i in range(300):\n"
        "    assert ACCESS_LOGGER.write_line(f'line {i}')\n"
        "sys.exit(0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert [line.split(": ", 1)[1] for line in result.stderr.splitlines()] == [
        f"line {i}" for i in range(300)
    ]


# -- the log file is the user's alone ---------------------------------------------------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are made readable by everyone (0644)."""
    saved = os.umask(0o022)
    yield
    os.umask(saved)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_log_folder_and_files_are_owner_only_rotated_ones_too(
    stderr: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    """Other users of the machine cannot read the tray's log: its folder is 0700 and the file
    0600, and so is each file rotation starts, which the umask would make 0644."""
    folder = tmp_path / "state" / "log"
    monkeypatch.setattr(logs, "log_dir", lambda: folder)
    monkeypatch.setattr(logs, "LOG_FILE_BYTES", 2000)
    monkeypatch.setattr(sys, "stderr", stderr)
    log_file = logs.setup_logging(to_file=True)
    assert log_file is not None
    assert (_mode(folder), _mode(log_file)) == (0o700, 0o600)
    for i in range(100):
        log_request(FakeRequest(f"/r/{i}"), record(), started=10.0, ended=10.1)
    flush()
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["trayproxy.log", "trayproxy.log.1", "trayproxy.log.2", "trayproxy.log.3"]
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert "could be read by other users" not in stderr.getvalue()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_log_left_readable_by_others_is_made_owner_only_and_said_so(
    stderr: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    """A log folder and files an older version left 0755 / 0644 are tightened at start, the
    rotated files too, and the log says so once."""
    folder = tmp_path / "log"
    folder.mkdir(mode=0o755)
    for name in ("trayproxy.log", "trayproxy.log.1", "trayproxy.log.3"):
        (folder / name).write_text("old line\n")
        (folder / name).chmod(0o644)
    monkeypatch.setattr(logs, "log_dir", lambda: folder)
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.setup_logging(to_file=True)
    flush()
    assert _mode(folder) == 0o700
    assert {p.name: _mode(p) for p in folder.iterdir()} == {
        "trayproxy.log": 0o600,
        "trayproxy.log.1": 0o600,
        "trayproxy.log.3": 0o600,
    }
    warnings = [line for line in stderr.getvalue().splitlines() if "could be read by other users" in line]
    assert len(warnings) == 1, stderr.getvalue()
    assert str(folder) in warnings[0]
    assert "trayproxy.log.3" in warnings[0]
