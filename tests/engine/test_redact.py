"""Secrets never leak: no key a tool sends or the proxy adds shows up in a log line or in an
answer the proxy makes itself, aiohttp's own parser-error page and logs included.

Log output is checked as printed: ``desktop.logs.setup_logging`` installs the redacting stderr
handler ``trayproxy serve`` uses, and every captured stderr line is searched for the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from rawhttp import build_request, exchange
from upstreams import Seen, dead_port, echo_app
from yarl import URL

from desktop import redaction
from desktop.config.model import Secret, Target
from desktop.engine.accesslog import log_request
from desktop.engine.forward import RequestRecord
from desktop.engine.guard import MAX_HEADER_BYTES
from desktop.logs import setup_logging
from desktop.redaction import (
    CREDENTIAL_HEADERS,
    MASK,
    SENSITIVE_HEADERS,
    RedactingFormatter,
    redact_target,
    redact_text,
    register_secrets,
)

# Keys shaped like real ones but not like the generic "sk-" shape, so only deliberate
# redaction (not the sk- pattern) can hide them.
GROQ_KEY = "gsk_CfgKey7e4b1c9d2a5f8e3b6c0d9a1f"
GEMINI_KEY = "AIzaSyCfgKey-9x8w7v6u5t4s3r2q1p0"
AZURE_KEY = "f3c0a9d2b7e14c6f8a5d2e9b1c7f4a60"
# The same shapes for the redact_text tables. These are never configured anywhere (configured
# keys are registered process-wide and masked verbatim), so only the shape rules can hide them.
SHAPE_GEMINI = "AIzaSyShape-1q2w3e4r5t6y7u8i9o0p"
SHAPE_AZURE = "9b8a7c6d5e4f30211203f4e5d6c7a8b9"
SHAPE_GROQ = "gsk_Shape0f1e2d3c4b5a69788796a5b4"


@pytest.fixture
def stderr_log(capfd) -> Iterator[Callable[..., Callable[[], list[str]]]]:
    """``lines = stderr_log(verbose=True)`` sets up logging as ``trayproxy serve`` does;
    ``lines()`` returns every stderr line printed since. Its handler goes and the levels it
    changed are restored afterwards."""
    root = logging.getLogger()
    touched = ("aiohttp", "trayproxy.access")
    saved_levels = {name: logging.getLogger(name).level for name in touched}
    saved_root_level = root.level
    before: set[logging.Handler] = set()

    def install(*, verbose: bool = True) -> Callable[[], list[str]]:
        before.update(root.handlers)
        setup_logging(verbose=verbose)
        capfd.readouterr()

        def lines() -> list[str]:
            for handler in root.handlers:
                handler.flush()  # access lines are written in batches (desktop/logs.py)
            return capfd.readouterr().err.splitlines()

        return lines

    yield install
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    root.setLevel(saved_root_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def _leaks(lines: list[str], *secrets: str) -> list[str]:
    return [line for line in lines if any(secret in line for secret in secrets)]


# --- malformed requests: aiohttp's parser-error page and its logs ---------------------------


# Malformed requests carrying a key ("SECRET123" in every case), each built for a Host value.
MALFORMED = [
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"Authorization: Bearer sk-live-SECRET123\x01x"]),
        id="control-char-in-authorization",
    ),
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"Authorization Bearer sk-live-SECRET123"]),
        id="authorization-line-without-colon",
    ),
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"x-api-key : SECRET123-anthropic"]),
        id="space-before-colon",
    ),
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"Proxy-Authorization: Basic SECRET123\x00"]),
        id="nul-in-proxy-authorization",
    ),
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"api-key: SECRET123\x7f\x01"]),
        id="control-chars-in-api-key",
    ),
    pytest.param(
        lambda host: build_request(
            headers=[("Host", host), b"Authorization: Bearer sk-live-SECRET123" + b"x" * 9000]
        ),
        id="overlong-authorization-line",
    ),
    pytest.param(
        lambda host: build_request(headers=[("Host", host), b"X-Session-Token: tok_SECRET123\x01"]),
        id="key-in-unlisted-header",
    ),
    pytest.param(
        lambda host: build_request(target="/v1beta/models?key=AIzaSECRET123\x01", headers=[("Host", host)]),
        id="control-char-after-key-in-query",
    ),
    pytest.param(
        lambda host: build_request(target="/v1beta/models?key=AIzaSECRET123\xff", headers=[("Host", host)]),
        id="raw-byte-after-key-in-query",
    ),
]


@pytest.mark.parametrize("make_request", MALFORMED)
async def test_malformed_request_carrying_a_key_gets_400_that_does_not_echo_it(
    aiohttp_server, start_proxy, stderr_log, make_request
) -> None:
    """aiohttp's error page and its "Error handling request" log quote the offending request
    line; a tool that sends a slightly broken header must not see its key echoed back, and
    the terminal running the proxy must not print it either."""
    lines = stderr_log(verbose=True)
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(str(upstream.make_url("")))
    request = make_request(f"127.0.0.1:{proxy.port}")
    response = await exchange(proxy.port, request)
    # A header line too long to parse is refused as too large (431), the others as malformed.
    overlong = len(max(request.split(b"\r\n"), key=len)) > MAX_HEADER_BYTES
    assert response.status == (431 if overlong else 400), response.raw[:300]
    assert b"SECRET123" not in response.raw
    assert json.loads(response.body)["error"]["type"] == "invalid_request_error"
    assert seen.requests == []
    printed = lines()
    # A raw byte in the target is refused as such (non_ascii_target), other faults as malformed.
    refusals = ("too long",) if overlong else ("malformed", "non_ascii_target")
    assert any(refusal in line for line in printed for refusal in refusals), printed  # logged
    assert _leaks(printed, "SECRET123") == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_until_serving(port: int, proc: asyncio.subprocess.Process) -> None:
    health = build_request(
        "GET", "/__trayproxy/health", headers=[("Host", f"127.0.0.1:{port}"), ("Connection", "close")]
    )
    async with asyncio.timeout(20):
        while True:
            assert proc.returncode is None, "trayproxy serve exited early"
            try:
                if (await exchange(port, health)).status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)


async def _serve_with_pure_python_parser(target: str, port: int, *flags: str) -> asyncio.subprocess.Process:
    """`trayproxy serve` with aiohttp's C extensions off (AIOHTTP_NO_EXTENSIONS=1); stderr piped."""
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "desktop",
        "serve",
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_malformed_request_with_pure_python_parser_does_not_echo_the_key(aiohttp_server) -> None:
    """Where aiohttp runs without its C extensions (no wheel for the platform, or
    AIOHTTP_NO_EXTENSIONS=1) its parser words errors differently; `trayproxy serve` must still
    answer a malformed request carrying a key without echoing or printing the key."""
    upstream = await aiohttp_server(echo_app(Seen()))
    port = _free_port()
    proc = await _serve_with_pure_python_parser(str(upstream.make_url("")), port, "--verbose")
    answers: dict[str, bytes] = {}
    try:
        await _wait_until_serving(port, proc)
        for case in MALFORMED:
            [make_request] = case.values
            response = await exchange(port, make_request(f"127.0.0.1:{port}"))
            assert response.status >= 400, (case.id, response.raw[:300])
            answers[case.id] = response.raw
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    printed = stderr.decode(errors="replace").splitlines()
    echoed = [case for case, raw in answers.items() if b"SECRET123" in raw]
    assert (echoed, _leaks(printed, "SECRET123")) == ([], [])


async def test_non_ascii_request_target_with_pure_python_parser_gets_400(aiohttp_server) -> None:
    """Without aiohttp's C parser a raw non-ASCII byte in the target reaches the proxy; the tool
    gets a 400 that says what to do, not a 500, and nothing is forwarded."""
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    port = _free_port()
    proc = await _serve_with_pure_python_parser(str(upstream.make_url("")), port)
    try:
        await _wait_until_serving(port, proc)
        raw = b"GET /x?q=\xff HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\n\r\n"
        response = await exchange(port, raw)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), timeout=20)
    assert response.status == 400, response.raw[:300]
    assert b"percent-encode" in response.raw
    assert seen.requests == []


# --- access log and the configured keys -----------------------------------------------------


@pytest.mark.parametrize("param", ["key", "api_key", "KEY"])
async def test_access_log_masks_key_query_parameter(aiohttp_server, start_proxy, stderr_log, param) -> None:
    """Gemini-style `?key=` URLs are logged with the key masked; the rest of the line (path,
    other parameters, status) stays readable, and the target still gets the key."""
    lines = stderr_log(verbose=False)
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(str(upstream.make_url("")))
    path = f"/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&{param}={SHAPE_GEMINI}&n=1"
    url = URL(proxy.url + path, encoded=True)
    async with aiohttp.ClientSession() as client, client.post(url, json={"contents": []}) as response:
        assert response.status == 200
    assert seen.requests[0]["raw_path"] == path
    printed = lines()
    access = [line for line in printed if "trayproxy.access" in line]
    assert len(access) == 1, printed
    assert f"{param}={MASK}" in access[0]
    assert "streamGenerateContent?alt=sse&" in access[0]
    assert " 200 " in access[0]
    assert _leaks(printed, SHAPE_GEMINI) == []


async def test_configured_keys_never_appear_in_logs_even_at_debug(
    aiohttp_server, start_proxy, stderr_log
) -> None:
    """With --verbose, over ordinary, malformed, refused and reserved-path requests, no line
    printed by the proxy (or by aiohttp) contains a key the user configured."""
    lines = stderr_log(verbose=True)
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(
        str(upstream.make_url("")),
        add_headers=(
            ("Authorization", Secret(f"Bearer {GROQ_KEY}")),
            ("x-goog-api-key", Secret(GEMINI_KEY)),
        ),
    )
    host = ("Host", f"127.0.0.1:{proxy.port}")
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/v1/models", headers={"Authorization": "Bearer client-own"}) as r:
            assert r.status == 200
        async with client.get(proxy.url + f"/v1/models?key={GEMINI_KEY}") as r:
            assert r.status == 200
        async with client.get(proxy.url + "/__trayproxy/health") as r:
            assert r.status == 200
    await exchange(
        proxy.port, build_request(headers=[host, b"x-goog-api-key: " + GEMINI_KEY.encode() + b"\x01"])
    )
    await exchange(proxy.port, build_request(headers=[("Host", "evil.example"), ("Connection", "close")]))
    # The keys were in use: the target got them.
    assert ["Authorization", f"Bearer {GROQ_KEY}"] in seen.requests[0]["headers"]
    assert ["x-goog-api-key", GEMINI_KEY] in seen.requests[0]["headers"]
    printed = lines()
    assert len(printed) >= 5, printed
    assert _leaks(printed, GROQ_KEY, GEMINI_KEY) == []


async def test_unreachable_target_502_and_logs_do_not_contain_keys(start_proxy, stderr_log) -> None:
    """When the target refuses connections the tool gets a 502 naming the target and the
    cause, never the configured key or the tool's own key, and the log shows neither."""
    lines = stderr_log(verbose=True)
    port = dead_port()
    proxy = await start_proxy(
        f"http://127.0.0.1:{port}/openai",
        add_headers=(("Authorization", Secret(f"Bearer {GROQ_KEY}")), ("api-key", Secret(AZURE_KEY))),
    )
    client_key = "AIzaSyClientOwn-0a1b2c3d4e5f6g7h8i"
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            proxy.url + f"/v1/chat/completions?key={client_key}",
            headers={"x-api-key": "client-x-api-key-0123456789"},
            json={"model": "m", "messages": []},
        ) as response,
    ):
        assert response.status == 502
        body = await response.text()
    message = json.loads(body)["error"]["message"]
    assert proxy.service.target.display_name in message
    assert "refused" in message
    for secret in (GROQ_KEY, AZURE_KEY, client_key, "client-x-api-key-0123456789"):
        assert secret not in body
    assert _leaks(lines(), GROQ_KEY, AZURE_KEY, client_key, "client-x-api-key-0123456789") == []


# --- redact_text, redact_target, the formatter ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("Authorization: Bearer sk-live-abcdef123456", "abcdef123456", "Authorization"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA", "authorization"),
        (f"api-key: {SHAPE_AZURE}", SHAPE_AZURE, "api-key"),
        (f"X-Api-Key:{SHAPE_AZURE}", SHAPE_AZURE, "X-Api-Key"),
        ("x-api-key: sk-ant-api03-Zx9_Yw8-Vu7", "Zx9_Yw8-Vu7", "x-api-key"),
        ("Proxy-Authorization: Basic Zm9vOmJhcmJheg==", "Zm9vOmJhcmJheg", "Proxy-Authorization"),
        (f"x-goog-api-key: {SHAPE_GEMINI}", SHAPE_GEMINI, "x-goog-api-key"),
        ("upstream said: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln rejected", "eyJhbGciOiJIUzI1NiJ9", "rejected"),
        ("invalid key sk-proj-AbC_123-xyz789QRS given", "AbC_123-xyz789QRS", "given"),
        (f"GET /v1beta/models?key={SHAPE_GEMINI}&alt=sse", SHAPE_GEMINI, "&alt=sse"),
        (f'"POST /v1/x?alt=sse&api_key={SHAPE_AZURE}" 200', SHAPE_AZURE, '" 200'),
        (f"b'Authorization: Bearer {SHAPE_GROQ}\\x01x'", SHAPE_GROQ, "\\x01x'"),
    ],
)
def test_redact_text_masks_credential_shapes(text, secret, kept) -> None:
    """Credential headers, bearer tokens, sk- keys and key= parameters are masked wherever
    they appear in a line, and the rest of the line stays readable."""
    redacted = redact_text(text)
    assert secret not in redacted
    assert MASK in redacted
    assert kept in redacted


def _cimultidict_repr() -> str:
    return repr(CIMultiDictProxy(CIMultiDict({"Host": "localhost:8000", "X-Api-Key": SHAPE_AZURE})))


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(lambda: str({"api-key": SHAPE_AZURE}), SHAPE_AZURE, id="dict"),
        pytest.param(_cimultidict_repr, SHAPE_AZURE, id="request-headers"),
        pytest.param(lambda: json.dumps({"x-goog-api-key": SHAPE_GEMINI}), SHAPE_GEMINI, id="json"),
        pytest.param(
            lambda: repr(CIMultiDict({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="})),
            "dXNlcjpwYXNzd29yZA",
            id="basic-auth-in-headers",
        ),
    ],
)
def test_header_mappings_printed_in_a_log_line_are_masked(text, secret) -> None:
    """A log line that prints request headers as a mapping (``log.debug("%s", request.headers)``,
    a dict, JSON) still hides api-key, x-api-key and Authorization values."""
    assert secret not in redact_text(text())


@pytest.mark.parametrize("header", sorted(SENSITIVE_HEADERS))
def test_every_credential_header_is_masked_in_a_log_line(header: str) -> None:
    """Each header the redactor names sensitive, the API key headers of the one list
    (CREDENTIAL_HEADERS) among them, has its value masked however a log line prints it: a
    header added to the list is masked without a second list, or a word, to update."""
    assert CREDENTIAL_HEADERS <= SENSITIVE_HEADERS
    spelt = "-".join(word.capitalize() for word in header.split("-"))
    for line in (f"sent {spelt}: {SHAPE_AZURE}", str({header: SHAPE_AZURE}), json.dumps({spelt: SHAPE_AZURE})):
        assert SHAPE_AZURE not in redact_text(line), line


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            f"/v1beta/models/m:generateContent?key={SHAPE_GEMINI}",
            f"/v1beta/models/m:generateContent?key={MASK}",
        ),
        (f"/v1/x?alt=sse&key={SHAPE_GEMINI}&n=2", f"/v1/x?alt=sse&key={MASK}&n=2"),
        (f"/v1/x?api_key={SHAPE_AZURE}", f"/v1/x?api_key={MASK}"),
        (f"/v1/x?KEY={SHAPE_AZURE}#frag", f"/v1/x?KEY={MASK}#frag"),
        ("/v1/models?limit=20&after=abc", "/v1/models?limit=20&after=abc"),
        ("/v1/x?monkey=1&keys=2", "/v1/x?monkey=1&keys=2"),
    ],
)
def test_redact_target_masks_only_key_parameters(target, expected) -> None:
    """The request target in the access line loses its key and nothing else."""
    assert redact_target(target) == expected


def test_redacting_formatter_masks_message_arguments_and_traceback() -> None:
    """A log record whose arguments or exception carry a key prints it masked everywhere."""
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"upstream refused x-api-key: {SHAPE_AZURE}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "trayproxy.test",
        logging.ERROR,
        __file__,
        1,
        "sent %s to %s",
        (f"Bearer {SHAPE_GROQ}", "/v1?key=abcdef123"),
        exc_info,
    )
    printed = formatter.format(record)
    assert "ValueError" in printed
    for secret in (SHAPE_GROQ, SHAPE_AZURE, "abcdef123"):
        assert secret not in printed


async def test_configured_bearer_key_is_masked_without_its_scheme_word(start_proxy) -> None:
    """A key configured as ``Authorization: Bearer KEY`` is masked when it turns up alone (an
    upstream error message, an exception), as a configured secret is promised to be."""
    await start_proxy(
        f"http://127.0.0.1:{dead_port()}", add_headers=(("Authorization", Secret(f"Bearer {GROQ_KEY}")),)
    )
    assert GROQ_KEY not in redact_text(f"upstream rejected the key {GROQ_KEY} for this model")


# Printable ASCII, space included: what an API key, token or password could be made of.
_KEY = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=48)


@given(key=_KEY, before=st.text(max_size=40), after=st.text(max_size=40))
def test_registered_key_never_survives_redaction(key: str, before: str, after: str) -> None:
    """Whatever a configured key looks like, a line containing it is printed without it."""
    saved = redaction._known_secrets  # process-wide: random keys must not mask later tests' text
    try:
        register_secrets([key])
        assert key not in redact_text(before + key + after)
    finally:
        redaction._known_secrets = saved


def test_secret_never_shows_its_value() -> None:
    """A configured key printed by mistake (repr, str, f-string, a Target in a log line) shows
    as *** and never as the key."""
    secret = Secret(GROQ_KEY)
    target = Target(url="https://api.groq.com/openai", add_headers=(("Authorization", secret),))
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the logging module's formatting
        repr(target),
        str(target),
        repr({"Authorization": secret}),
    ]
    for text in shown:
        assert GROQ_KEY not in text, text
    assert secret.reveal() == GROQ_KEY
    assert target.secrets() == (GROQ_KEY,)


def _every_shape_pass(text: str) -> str:
    """redact_text as it was before its shortcut: all four shape passes, always."""
    for secret in redaction._known_secrets:
        text = text.replace(secret, MASK)
    text = redaction._HEADER_SHAPE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    text = redaction._QUERY_SHAPE.sub(lambda m: m.group(1) + MASK, text)
    text = redaction._BEARER_SHAPE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return redaction._KEY_SHAPE.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + MASK, text)


# Pieces a log line is made of, the shapes' own words among them in mixed case.
_LINE_PIECES = st.lists(
    st.sampled_from(
        [
            "Authorization: ",
            "PROXY-authorization=",
            "x-API-key: ",
            "x-goog-api-key=",
            "Set-Cookie: ",
            "cookie=",
            "?key=",
            "&API_KEY=",
            ";api-key=",
            "Bearer ",
            "bearer\t",
            "sk-",
            "tp-local-",
            "&token=",
            "?Auth=",
            "ghp_",
            "github_pat_",
            "glpat-",
            "AIza",
            "xoxb-",
            "eyJ",
            ".",
            "+",
            "abcDEF123456_-",
            " ",
            "'",
            '"',
            ":",
            "/v1/x",
            "GET ",
            "\n",
        ]
    )
    | st.text(max_size=12),
    max_size=14,
).map("".join)


@given(line=_LINE_PIECES)
def test_redact_text_shortcut_masks_what_every_pass_masks(line: str) -> None:
    """redact_text skips its shape passes when none of the shapes' words is in the line (the
    common access-log line); the result is the same as running every pass."""
    assert redact_text(line) == _every_shape_pass(line)


# --- keys a client put in the URL itself ------------------------------------------------------

# Shaped like the real thing; none is configured, so only the shape rules can hide them.
URL_GITHUB = "ghp_R8fXk2LmQ9wZ4tYc7VbN1sJd6HgE3aPu0oIq"
URL_OPENAI = "sk-proj-Xq7Lm2Nb9Vc4Zx8Kp1Jh6Gf3Dd5Ss0Aa-Qw_Er"
URL_GEMINI = "AIzaSyUrl-9x8w7v6u5t4s3r2q1p0o9n8m7l6k5"
URL_OPENAI_2 = "sk-Tq9Wm3Vb7Nc2Lk8Jh4Gf6Ds1Az5Xy0Pu"


@pytest.mark.parametrize(
    ("target", "secret", "kept"),
    [
        (f"/v1/models?token={URL_GITHUB}", URL_GITHUB[4:], "/v1/models?token="),
        (f"/v1/chat/completions?auth=Bearer%20{URL_OPENAI}&n=1", URL_OPENAI[8:], "&n=1"),
        (f"/v1/chat/completions?auth=Bearer+{URL_OPENAI}", URL_OPENAI[8:], "?auth="),
        (f"/v1beta/models?k={URL_GEMINI}&alt=sse", URL_GEMINI[4:], "&alt=sse"),
        (f"/v1/x?x=1%26key%3D{URL_OPENAI_2}&n=2", URL_OPENAI_2[3:], "/v1/x?x=1%26key%3D"),
        (f"/v1/x?x=1%2526key%253D{URL_OPENAI_2}", URL_OPENAI_2[3:], "?x=1%2526key%253D"),
        (f"/v1/x?q=%73%6B%2D{URL_OPENAI_2[3:]}", URL_OPENAI_2[3:], "/v1/x?q="),
        (f"/proxy/{URL_GITHUB}/v1/models", URL_GITHUB[4:], "/v1/models"),
        (f"/v1/x?c=ctx%252F{URL_GEMINI}", URL_GEMINI[4:], "?c=ctx%252F"),
        ("/v1/x?id_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-nat_ure0", "eyJzdWIiOiIxMjM0In0", "id_token="),
        ("/hooks?slack=xoxb-1234567890-0987654321-AbCdEfGhIjKl", "1234567890-0987654321", "/hooks?slack="),
        ("/api?t=glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn", "Ab1Cd2Ef3Gh4Ij5Kl6Mn", "/api?t="),
        ("/gh?p=github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789", "11ABCDEFG0abcdefghijkl", "/gh?p="),
    ],
)
def test_redact_target_masks_key_shapes_anywhere_also_percent_encoded(target: str, secret: str, kept: str) -> None:
    """Keys a client put in the URL, whatever the parameter is called, in the path too, and
    percent-encoded once or twice, leave the access line; the rest keeps its bytes."""
    redacted = redact_target(target)
    assert secret not in redacted
    assert secret not in _fully_decoded(redacted)
    assert MASK in redacted
    assert kept in redacted


def test_redact_target_masks_a_configured_key_sent_percent_encoded() -> None:
    """A configured key of no known shape, sent encoded (``%2B`` for its ``+``), is masked too."""
    key = "Cfg+Key/0f9e8d7c6b5a"
    saved = redaction._known_secrets
    try:
        register_secrets([key])
        redacted = redact_target(f"/v1/x?opaque={quote(key, safe='')}&n=1")
    finally:
        redaction._known_secrets = saved
    assert redacted == f"/v1/x?opaque={MASK}&n=1"


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/completions",
        "/v1/files/file-abc%2Fdef?purpose=fine%20tune&limit=20",
        "/api/task-12345678/status?after=msg_abc&page_token=xyz",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        "/v1/x?q=%E2%82%AC%25%zz%",
        # Names that hold a credential word without being one.
        "/v1/x?monkey=1&keys=2&max_tokens=5&zip_code=9&codec=h264&signal=3&passage=4&designer=5",
        "/v1/x?keyword=a&tokenizer=b&secretary=c&author=d&pwds=e&next_page_token=f&pageToken=g",
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    ],
)
def test_redact_target_leaves_a_target_without_keys_byte_for_byte(target: str) -> None:
    assert redact_target(target) == target


def _fully_decoded(text: str) -> str:
    """``text`` percent-decoded until nothing changes (as a reader decoding the line would)."""
    for _ in range(5):
        text = unquote(text, encoding="latin-1")
    return text


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALNUM = _B64URL[:62]


def _run(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=low, max_size=high)


# (prefix, body) of keys as their services issue them.
_URL_KEYS = st.one_of(
    st.tuples(st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-", "sk-svcacct-"]), _run(_B64URL, 20, 90)),
    st.tuples(st.sampled_from(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]), _run(_ALNUM, 36, 36)),
    st.tuples(st.just("github_pat_"), _run(_ALNUM + "_", 82, 82)),
    st.tuples(st.just("glpat-"), _run(_B64URL, 20, 20)),
    st.tuples(st.just("AIza"), _run(_B64URL, 35, 35)),
    st.tuples(st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"]), _run(_ALNUM + "-", 20, 60)),
    st.tuples(
        st.just("eyJ"),
        st.tuples(_run(_B64URL, 10, 40), _run(_B64URL, 10, 80), _run(_B64URL, 0, 43)).map(".".join),
    ),
    # An opaque bearer token: only the word before it says what it is.
    st.tuples(st.sampled_from(["Bearer ", "bearer ", "Bearer+"]), _run(_B64URL + ".~+/", 20, 60)),
)
_PARAM = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_.-]{0,12}", fullmatch=True)
_ENCODINGS = ("as is", "quoted", "quoted twice", "every byte", "separators encoded")


def _place(key: str, param: str, encoding: str, where: str) -> str:
    if encoding == "quoted":
        key = quote(key, safe="")
    elif encoding == "quoted twice":
        key = quote(quote(key, safe=""), safe="")
    elif encoding == "every byte":
        key = "".join(f"%{byte:02X}" for byte in key.encode())
    if where == "path":
        return f"/v1/{key}/models"
    if encoding == "separators encoded":
        return f"/v1/x?x=1%26{param}%3D{quote(key, safe='')}"
    return f"/v1/x?alt=sse&{param}={key}&n=1"


@given(
    key=_URL_KEYS,
    param=_PARAM,
    encoding=st.sampled_from(_ENCODINGS),
    where=st.sampled_from(["query", "path"]),
)
def test_no_key_of_a_known_shape_survives_into_an_access_line(
    key: tuple[str, str], param: str, encoding: str, where: str
) -> None:
    """Whatever the parameter is called, wherever in the target the key sits and however often
    it was percent-encoded, the access line (as log_request writes it, through the redacting
    formatter) holds neither the key nor its encoded form."""
    prefix, body = key
    target = _place(prefix + body, param, encoding, where)
    printed = _access_line(target)
    assert body not in printed
    assert body not in _fully_decoded(printed)
    assert '"GET /v1/' in printed


# Query parameters that carry a credential under a name of their own (issue 12 §4: an attacker
# trial found each of these in access lines): Azure API Management, Azure Functions, Azure SAS,
# S3 presigned URLs, OAuth clients, and the api key spelt every way.
_CREDENTIAL_PARAMS = (
    "subscription-key",
    "Ocp-Apim-Subscription-Key",
    "code",
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "access_key",
    "accessKey",
    "client_secret",
    "clientSecret",
    "password",
    "passwd",
    "pwd",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "apiKey",
    "x-api-key",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "oauth_token",
    "auth",
    "authorization",
)
# A key of no known shape: only the parameter's name says what it is.
_SHAPELESS = _run(_ALNUM + "-_.~+/=", 12, 48).filter(lambda value: value[0].isalnum())


@given(
    name=st.sampled_from(_CREDENTIAL_PARAMS),
    case=st.sampled_from([str, str.lower, str.upper]),
    value=_SHAPELESS,
    encoding=st.sampled_from(("as is", "quoted", "quoted twice", "separators encoded")),
    position=st.sampled_from(["first", "middle", "last"]),
)
def test_no_credential_parameter_survives_into_an_access_line(
    name: str, case: Callable[[str], str], value: str, encoding: str, position: str
) -> None:
    """A key of no known shape in a parameter named for a credential (whatever its case,
    first, between others or last, percent-encoded or behind encoded separators) is masked in
    the access line; the parameters around it stay readable."""
    param = case(name)
    if encoding == "quoted":
        sent = quote(value, safe="")
    elif encoding == "quoted twice":
        sent = quote(quote(value, safe=""), safe="")
    else:
        sent = value
    pair = f"{param}={sent}" if encoding != "separators encoded" else f"x=1%26{param}%3D{quote(value, safe='')}"
    query = {"first": f"?{pair}&alt=sse", "middle": f"?alt=sse&{pair}&n=1", "last": f"?alt=sse&{pair}"}[position]
    printed = _access_line(f"/v1/x{query}")
    assert value not in printed
    assert value not in _fully_decoded(printed)
    assert "alt=sse" in printed
    assert MASK in printed


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(RedactingFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _access_line(target: str) -> str:
    """The access line log_request prints for a GET of ``target``."""
    logger = logging.getLogger("trayproxy.access")
    handler = _Lines()
    saved_level, saved_propagate = logger.level, logger.propagate
    logger.addHandler(handler)  # another handler than the ones desktop.logs installs: the record path
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        record = RequestRecord()
        record.status = 200
        log_request(make_mocked_request("GET", target), record, started=0.0, ended=0.1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate
    (line,) = handler.lines
    return line


async def test_real_access_log_masks_keys_a_client_put_in_the_url(aiohttp_server, start_proxy, stderr_log) -> None:
    """Through the real server and the log set up as `trayproxy serve` does: keys in the URL
    (the issue's examples, and one in the path) reach the target as sent but not the log; each
    request still has its line, with the path readable."""
    lines = stderr_log(verbose=False)
    seen = Seen()
    upstream = await aiohttp_server(echo_app(seen))
    proxy = await start_proxy(str(upstream.make_url("")))
    targets = [
        f"/v1/models?token={URL_GITHUB}",
        f"/v1/chat/completions?auth=Bearer%20{URL_OPENAI}",
        f"/v1beta/models?k={URL_GEMINI}",
        f"/v1/files?x=1%26key%3D{URL_OPENAI_2}",
        f"/v1/{URL_GITHUB}/models",
    ]
    for target in targets:
        request = build_request("GET", target, headers=[("Host", f"127.0.0.1:{proxy.port}"), ("Connection", "close")])
        assert (await exchange(proxy.port, request)).status == 200
    assert [request["raw_path"] for request in seen.requests] == targets
    printed = lines()
    access = [line for line in printed if "trayproxy.access" in line]
    assert len(access) == len(targets), printed
    for body in (URL_GITHUB[4:], URL_OPENAI[8:], URL_GEMINI[4:], URL_OPENAI_2[3:]):
        assert not [line for line in printed if body in _fully_decoded(line)]
    assert '"GET /v1/models?token=' in access[0]
    assert '"GET /v1/files?x=1%26key%3D' in access[3]
    assert all(MASK in line for line in access)


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("user:rawpass-secret77@evil.example:443", "user:***@evil.example:443"),
        ("rawtoken1234567@evil.example:443", "***@evil.example:443"),
        ("evil.example:443", "evil.example:443"),
        ("/v1/models?email=a@b.example", "/v1/models?email=a@b.example"),
    ],
)
def test_a_password_in_a_connect_target_is_masked(target: str, shown: str) -> None:
    """A refused ``CONNECT user:password@host:443`` is still logged; its password is not (a
    cold trial saw it in clear while an absolute-form URL's was masked)."""
    assert redact_target(target) == shown


@pytest.mark.parametrize(
    "query", ["key[]=", "token[0]=", "creds[key]=", "key%5B%5D=", "filter[api_key]=", "a=1&secret[x][y]="]
)
def test_a_credential_parameter_in_array_form_is_masked(query: str) -> None:
    """PHP and Rails spell list and nested parameters with brackets; a key sent as ``key[]=``
    is still a key (a cold trial saw it in clear)."""
    shown = redact_target(f"/v1/models?{query}rawbracket12345")
    assert "rawbracket12345" not in shown
    assert shown.endswith(MASK)


@pytest.mark.parametrize("query", ["keys[]=a1b2c3d4e5", "items[0]=a1b2c3d4e5", "max_tokens=a1b2c3d4e5"])
def test_array_parameters_of_no_credential_name_stay_readable(query: str) -> None:
    assert redact_target(f"/v1/models?{query}") == f"/v1/models?{query}"
