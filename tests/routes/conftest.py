"""One ``trayproxy serve`` per test module (``start_serve``): routes and failover are seen as a
user sees them, through the real CLI on one port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from route_serve import ServeStarter, StartServe


@pytest.fixture(scope="module")
def start_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServe]:
    """``start_serve(config_text, env)``: serve that config (``{port}`` in it is filled with a
    free port) with ``env`` added to a scrubbed environment; stopped after the module."""
    starter = ServeStarter(tmp_path_factory)
    yield starter.start
    starter.stop_all()
