"""The export format: what goes out comes back the same, and a bad file is refused whole."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from recorded import chat_exchange

from desktop import redaction
from desktop.cache import RecordingFormatError, RecordingStore, export_to, import_from
from desktop.cache.exchange import exchange_line, read_line

MIB = 1024 * 1024


def test_an_export_imported_into_a_fresh_store_gives_the_same_recordings(tmp_path: Path) -> None:
    """The CI recipe: export, commit the file, import on another machine."""
    originals = [
        chat_exchange("a", recorded_at=1000.5),
        chat_exchange("b", answer="h\u00e9llo \u2603".encode(), pieces=4, recorded_at=1001.0),
        chat_exchange("c", answer=b"\x1f\x8b\x08\x00binary", pieces=2, recorded_at=1002.0),
    ]
    with RecordingStore.open(tmp_path / "one.sqlite3") as one:
        for exchange in originals:
            one.put(exchange, max_bytes=MIB)
        out = io.StringIO()
        assert export_to(one, out) == 3
    text = out.getvalue()
    assert text.isascii()
    lines = text.splitlines()
    assert all(json.loads(line)["format"] == "trayproxy-recording" for line in lines)
    assert all(json.loads(line)["version"] == 1 for line in lines)
    exported = tmp_path / "recording.jsonl"
    exported.write_text(text)
    with RecordingStore.open(tmp_path / "two.sqlite3") as two:
        assert import_from(two, exported) == 3
        assert list(two.exchanges()) == originals


def test_a_bad_line_names_its_number_and_nothing_is_imported(tmp_path: Path) -> None:
    with RecordingStore.open(tmp_path / "one.sqlite3") as one:
        one.put(chat_exchange("a"), max_bytes=MIB)
        one.put(chat_exchange("b"), max_bytes=MIB)
        out = io.StringIO()
        export_to(one, out)
    good, second = out.getvalue().splitlines()
    broken = json.loads(second)
    broken["response"]["status"] = "200"
    text = "\n".join([good, "", json.dumps(broken)]) + "\n"
    with RecordingStore.open(tmp_path / "two.sqlite3") as two:
        with pytest.raises(RecordingFormatError) as caught:
            import_from(two, io.StringIO(text))
        assert caught.value.line == 3
        assert "response.status" in caught.value.problem
        assert two.stats().entries == 0


def good_line() -> dict[str, Any]:
    return json.loads(exchange_line(chat_exchange("a", answer=b"data: hi\n\n", pieces=2)))


def with_change(path: str, value: object) -> dict[str, Any]:
    """The good line with the field at dotted ``path`` set to ``value`` (DELETE: removed)."""
    document = good_line()
    *parents, last = path.split(".")
    place = document
    for name in parents:
        place = place[name]
    if value is DELETE:
        del place[last]
    else:
        place[last] = value
    return document


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("format", "har", 'not a TrayProxy recording: "format" must be "trayproxy-recording"'),
        (
            "version",
            2,
            "version 2 is not one this TrayProxy reads (1) (written by a newer TrayProxy; update this one)",
        ),
        ("version", "1", '"version" must be a whole number'),
        ("target", DELETE, "target is missing"),
        ("target", "", "target is empty"),
        ("method", "PO ST", "method 'PO ST' is not an HTTP method"),
        ("path", "v1/chat", "path 'v1/chat' must start with /"),
        (
            "query",
            "alt=sse&key=AIzaSecret",
            "query holds a credential parameter (key=, token=...): recordings never hold one",
        ),
        ("request", [], "request must be an object, not an array"),
        ("request.body", 12, "request.body must be a string or an object, not a number"),
        ("request.body", {"base64": "***"}, "request.body.base64 is not valid base64"),
        (
            "request.headers",
            [["x api", "1"]],
            "request.headers[0]: 'x api' is not a header name; use letters, digits and '-' (no spaces or colons)",
        ),
        (
            "request.headers",
            [["authorization", "Bearer sk-x"]],
            "not taken: request header authorization is not one of the key headers (anthropic-version, anthropic-beta, openai-beta, openai-organization, openai-project, accept, accept-encoding)",
        ),
        ("request.headers", [["accept"]], "request.headers[0] must be a [name, value] pair of strings"),
        ("vary", {"x-api-key": "k"}, "not taken: header x-api-key may hold a credential"),
        ("vary", {"x-tenant": 3}, "vary.x-tenant must be a string or null, not a number"),
        ("response.status", "200", "response.status must be a whole number, not a string"),
        ("response.status", True, "response.status must be a whole number, not true/false"),
        ("response.status", 500, "not taken: status 500 is not a success (2xx)"),
        ("response.headers", [["Set-Cookie", "sid=1"]], "not taken: header Set-Cookie may hold a credential"),
        (
            "response.pieces",
            [[0.5, "a"], [0.1, "b"]],
            "response.pieces[1]: the seconds must not go back (0.1 after 0.5)",
        ),
        ("response.pieces", [[-1, "a"]], "response.pieces[0]: the seconds must be a number, 0 or more"),
        ("response.pieces", [["0", "a"]], "response.pieces[0]: the seconds must be a number, 0 or more"),
        ("response.pieces", [[0]], "response.pieces[0] must be a [seconds, text] pair"),
        (
            "recorded_at",
            "yesterday",
            "recorded_at 'yesterday' is not an ISO 8601 time (such as 2025-01-31T12:00:00Z)",
        ),
        (
            "recorded_at",
            "2025-01-31T12:00:00",
            "recorded_at '2025-01-31T12:00:00' has no time zone; end it with Z for UTC",
        ),
        # An answer that would frame itself otherwise than its pieces, so that a client reads
        # what follows as the answer to its next request, or waits for bytes that never come
        # (the attacker trial's shared recordings).
        (
            "response.headers",
            [["Transfer-Encoding", "chunked"]],
            "not taken: header Transfer-Encoding is about a connection, not the answer",
        ),
        ("response.headers", [["Connection", "close"]], "not taken: header Connection is about a connection, not the answer"),
        (
            "response.headers",
            [["Content-Length", "500"]],
            "not taken: Content-Length 500 is not the answer's length (10 bytes)",
        ),
        (
            "response.headers",
            [["Content-Length", "10"], ["content-length", "10"]],
            "not taken: Content-Length 10, 10 is not the answer's length (10 bytes)",
        ),
        ("response.status", 204, "not taken: a POST answered 204 has no body, and this one has pieces"),
        ("method", "HEAD", "not taken: a HEAD answered 200 has no body, and this one has pieces"),
        ("response.status", 206, "not taken: status 206 is a part of an answer, not the answer"),
        (
            "response.reason",
            "OK\r\nX-Injected: 1",
            "response.reason 'OK\\r\\nX-Injected: 1' must be printable ASCII of at most 200 characters",
        ),
        ("recorded_at", "9999-01-01T00:00:00Z", "recorded_at '9999-01-01T00:00:00Z' is in the future"),
        ("target", "open\x1b[31mai", "target 'open\\x1b[31mai' holds control characters"),
        ("response.pieces", [[0, ""]] * 100_001, "not taken: the answer came in over 100,000 pieces"),
    ],
)
def test_each_bad_field_is_named_with_what_is_wrong(path: str, value: object, problem: str) -> None:
    with pytest.raises(RecordingFormatError) as caught:
        read_line(json.dumps(with_change(path, value)), 7)
    assert (caught.value.line, caught.value.problem) == (7, problem)
    assert str(caught.value) == f"line 7: {problem}"


def test_a_name_given_twice_in_one_object_is_refused() -> None:
    """A reviewer reading the file sees one of the two; JSON parsers keep the last."""
    text = json.dumps(good_line())
    doubled = text.replace('"status": 200', '"status": 200, "status": 201', 1)
    with pytest.raises(RecordingFormatError) as caught:
        read_line(doubled, 3)
    assert caught.value.problem == '"status" is given twice in one object'


def test_lines_that_are_not_json_objects_or_not_utf8_are_named(tmp_path: Path) -> None:
    good = json.dumps(good_line())
    cases = {
        b"not json\n": "not JSON",
        b"[1, 2]\n": "a line must be a JSON object, not an array",
        good.encode()
        + b"\n"
        + b'{"format": "trayproxy-recording", "x": "\xff"}\n': "line 2: not UTF-8 text (byte 41)",
    }
    for number, (text, problem) in enumerate(cases.items()):
        source = tmp_path / f"bad{number}.jsonl"
        source.write_bytes(text)
        with RecordingStore.open(tmp_path / "store.sqlite3") as store:
            with pytest.raises(RecordingFormatError, match=re.escape(problem)):
                import_from(store, source)
            with pytest.raises(RecordingFormatError, match=re.escape(problem)):
                import_from(store, io.BytesIO(text))
            assert store.stats().entries == 0


def test_an_entry_holding_a_registered_key_is_refused() -> None:
    """The key TrayProxy sends must never reach a recording, even one written by hand."""
    registered = "sk-registered-for-this-test-0123456789"
    saved = redaction._known_secrets
    redaction.register_secrets([registered])
    try:
        for path, value in [
            ("request.body", f'{{"note": "{registered}"}}'),
            ("response.pieces", [[0, f"echo {registered}"]]),
            ("response.headers", [["x-echo", registered]]),
            ("path", f"/v1/{registered}/chat"),
        ]:
            with pytest.raises(RecordingFormatError, match="holds a key TrayProxy sends"):
                read_line(json.dumps(with_change(path, value)), 1)
    finally:
        redaction._known_secrets = saved


def test_the_example_in_docs_recordings_md_is_a_valid_line() -> None:
    """The documented example imports: docs and code say the same."""
    docs = (Path(__file__).parents[2] / "docs" / "recordings.md").read_text(encoding="utf-8")
    example = docs.split("```json\n", 1)[1].split("```", 1)[0]
    exchange = read_line(" ".join(example.splitlines()), 1)
    assert exchange.response_headers[0] == ("Content-Type", "text/event-stream; charset=utf-8")
    assert [piece for _, piece in exchange.pieces][-1] == b"data: [DONE]\n\n"
    assert exchange_line(exchange) == exchange_line(read_line(exchange_line(exchange), 1))
