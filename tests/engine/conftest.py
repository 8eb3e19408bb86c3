"""Engine test settings: the forwarding tests run on both ways of sending upstream, the
WebSocket tests on both ways of carrying a WebSocket, and the guard tests on both of aiohttp's
request parsers.

Upstream.send drives aiohttp's client parts itself on the aiohttp version it was read against
(LEAN_SEND, leansend.py) and sends through ClientSession.request on any other; WebSockets are
relayed byte for byte on that version (RAW_RELAY) and bridged message by message on any other.
Where the version gates hold the tests run both ways, so the fallback a user on another aiohttp
version gets is tested as well; elsewhere only the fallback runs (the gated ways lean on that
version's internals, pinned in tests/engine/test_aiohttp_internals.py).
aiohttp parses requests with llhttp (C) unless AIOHTTP_NO_EXTENSIONS is set or the platform has
no C extension, when its pure-Python parser runs: a test that asks for ``parser`` runs under
each (tests/pure_parser.py), since the two accept and refuse different things.
"""

from __future__ import annotations

import pytest
from pure_parser import PARSERS

from desktop.engine import upstream, websocket

# Test modules whose requests go through Upstream.send.
FORWARDING_MODULES = frozenset(
    {"test_http_forwarding", "test_upstream", "test_errors", "test_streaming", "test_response_timing"}
)


# The ways this aiohttp can take (see the module docstring).
SEND_PATHS = ["lean", "session"] if upstream.LEAN_SEND else ["session"]
WS_PATHS = ["relay", "bridge"] if websocket.RAW_RELAY else ["bridge"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in FORWARDING_MODULES:
        metafunc.parametrize("send_path", SEND_PATHS, indirect=True)
    if metafunc.module.__name__.rpartition(".")[2] == "test_websocket":
        metafunc.parametrize("ws_path", WS_PATHS, indirect=True)
    if "parser" in metafunc.fixturenames:
        metafunc.parametrize("parser", PARSERS)


@pytest.fixture(autouse=True)
def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``lean`` (the default where aiohttp is the checked version) or ``session``."""
    path = getattr(request, "param", "lean" if upstream.LEAN_SEND else "session")
    monkeypatch.setattr(upstream, "LEAN_SEND", path == "lean")
    return path


@pytest.fixture(autouse=True)
def ws_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``relay`` (the default where aiohttp is the checked version) or ``bridge``."""
    path = getattr(request, "param", "relay" if websocket.RAW_RELAY else "bridge")
    monkeypatch.setattr(websocket, "RAW_RELAY", path == "relay")
    return path
