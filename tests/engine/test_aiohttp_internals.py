"""Every aiohttp internal the engine leans on, pinned by name (issue 12 §1).

The engine uses aiohttp's public API except where it has none for what a proxy needs; each such
place says so in one comment and is named here, so an aiohttp release that moves one fails this
file by name instead of a user's request:

- forward.PassThroughResponse (every version; pyproject.toml keeps aiohttp below 3.15): the
  headers aiohttp's server adds, taken out again; headers held for the first body chunk.
- leansend.py (aiohttp 3.14.x only, LEAN_SEND): the client's request, connector and response
  driven without ClientSession.request.
- the byte relay (aiohttp 3.14.x only, RAW_RELAY): both connections' payload parsers swapped
  for the relay's own.

The gated ones are checked where their gate holds; elsewhere the fallback runs and is covered
by the engine tests, which conftest.py runs on every way this aiohttp takes.
"""

from __future__ import annotations

import inspect

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_proto import ResponseHandler
from aiohttp.web_protocol import RequestHandler

from desktop.engine import upstream, websocket

LEAN_ONLY = pytest.mark.skipif(not upstream.LEAN_SEND, reason="the lean send path is off on this aiohttp")
RELAY_ONLY = pytest.mark.skipif(not websocket.RAW_RELAY, reason="the byte relay is off on this aiohttp")


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_gates_open_on_the_aiohttp_version_they_were_read_against() -> None:
    """Both gated ways run on aiohttp 3.14.x and nowhere else."""
    expected = aiohttp.__version__.startswith("3.14.")
    assert upstream.LEAN_SEND is expected
    assert websocket.RAW_RELAY is expected


def test_pyproject_keeps_aiohttp_to_the_versions_read() -> None:
    """The ungated internals (PassThroughResponse) are read in 3.12 .. 3.14: the installed
    aiohttp is one of those, as pyproject.toml's range says."""
    major, minor = (int(part) for part in aiohttp.__version__.split(".")[:2])
    assert (3, 12) <= (major, minor) <= (3, 14), aiohttp.__version__


def test_pass_through_response_internals() -> None:
    """StreamResponse takes its headers as they are (_real_headers), holds them while
    _send_headers_immediately is false, and adds Content-Type, Date and Server in the coroutine
    _prepare_headers, which PassThroughResponse wraps."""
    assert "_real_headers" in parameters(web.StreamResponse.__init__)
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False
    assert inspect.iscoroutinefunction(web.StreamResponse._prepare_headers)


def test_request_handler_hooks_the_service_overrides() -> None:
    """server.py builds aiohttp's RequestHandler itself (web.Server, manager first, loop by
    name) and replaces its error page through handle_error(request, status, exc, message)."""
    assert parameters(RequestHandler.__init__)[:3] == ["self", "manager", "loop"]
    assert parameters(RequestHandler.handle_error) == ["self", "request", "status", "exc", "message"]
    assert callable(web.Server.pre_shutdown)


@LEAN_ONLY
def test_lean_send_internals() -> None:
    """What leansend.py passes to ClientRequest and ResponseHandler, and the fields it reads."""
    from aiohttp import helpers

    from desktop.engine import leansend

    assert {"loop", "response_class", "proxy", "proxy_headers", "timer", "session", "traces"} <= set(
        parameters(aiohttp.ClientRequest.__init__)
    )
    assert set(parameters(ResponseHandler.set_response_params)) == {
        "self",
        "timer",
        "skip_payload",
        "read_until_eof",
        "auto_decompress",
        "read_timeout",
        "read_bufsize",
        "timeout_ceil_threshold",
        "max_line_size",
        "max_field_size",
        "max_headers",
    }
    assert aiohttp.ClientRequest._skip_auto_headers is None
    assert "skip_auto_headers" in parameters(aiohttp.ClientRequest.update_auto_headers)
    assert "HEAD" in helpers.EMPTY_BODY_METHODS
    assert "GET" not in helpers.EMPTY_BODY_METHODS
    assert isinstance(helpers.TimerNoop(), helpers.BaseTimerContext)
    assert leansend.LeanRequest._skip_auto_headers is None  # set per request, by update_auto_headers


def test_upstream_constants_are_aiohttps_defaults() -> None:
    """upstream.py names aiohttp's defaults it passes explicitly, so both send paths use the
    same ones (the read buffer became 256 KiB in 3.13; 3.12 read 64 KiB)."""
    connector_defaults = inspect.signature(aiohttp.TCPConnector.__init__).parameters
    assert connector_defaults["timeout_ceil_threshold"].default == upstream.TIMEOUT_CEIL_THRESHOLD_S
    assert upstream.READ_BUFFER_BYTES == 2**18


@RELAY_ONLY
def test_byte_relay_internals() -> None:
    """The relay swaps each connection's payload parser (set_parser on aiohttp's server and
    client protocols) and clears the client protocol's read timeout."""
    assert parameters(ResponseHandler.set_parser)[:3] == ["self", "parser", "payload"]
    assert parameters(RequestHandler.set_parser)[:2] == ["self", "parser"]
    assert isinstance(inspect.getattr_static(ResponseHandler, "read_timeout"), property)
    assert callable(RequestHandler.keep_alive)
