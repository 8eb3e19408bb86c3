"""Shared fixtures: a clean environment per test and the proxy started on the test's loop."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from desktop.config.model import ProxySettings, Target
from desktop.controller import ProxyController
from desktop.engine.service import ProxyService

sys.path.insert(0, str(Path(__file__).parent))

from isolated_home import home_environ, is_scrubbed


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Scrub proxy, key and config variables; give the test its own HOME and XDG dirs."""
    for name in list(os.environ):
        if is_scrubbed(name):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    for name, value in home_environ(home).items():
        monkeypatch.setenv(name, value)
    # No test may read or write the developer's own keychain: subprocesses get keyring's
    # "no keychain" backend unless a test asks for the file keychain (file_keyring).
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def file_keyring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A real keyring backend over a file, in this process and in subprocesses of the CLI."""
    import keyring
    from keyring_backend import FileKeyring

    store = tmp_path / "keyring.json"
    monkeypatch.setenv("TRAYPROXY_TEST_KEYRING", str(store))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring_backend.FileKeyring")
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    keyring.set_keyring(FileKeyring())  # clean_environ puts the previous one back
    return store


@dataclass
class RunningProxy:
    """A proxy started on the test's event loop, listening on 127.0.0.1 at a free port."""

    service: ProxyService

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


StartProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    """``await start_proxy(target_url, **target_fields, settings=..., resolver=...)``."""
    started: list[ProxyService] = []

    async def go(
        target: str | Target,
        *,
        settings: ProxySettings | None = None,
        resolver: Any = None,
        **target_fields: Any,
    ) -> RunningProxy:
        if isinstance(target, str):
            target = Target(url=target, name="test-target", **target_fields)
        elif target_fields:
            target = replace(target, **target_fields)
        settings = settings or ProxySettings(hosts=("127.0.0.1",), port=0, stop_grace_s=2.0)
        service = ProxyService(settings, target, resolver=resolver)
        await service.start()
        started.append(service)
        return RunningProxy(service)

    yield go
    for service in started:
        await service.stop(grace_s=0.5)


@pytest.fixture
def follow() -> Iterator[list[ProxyController]]:
    """Controllers a test makes (from_config: they follow their file); each is closed, watcher
    and proxy, when the test ends."""
    made: list[ProxyController] = []
    yield made
    for controller in made:
        controller.close(grace_s=0.5)
