"""The PyInstaller bundle works like the source: --version, serve (HTTP, SSE, WebSocket), tray.

Runs when TRAYPROXY_BUNDLE names the built executable (``.ci/run`` builds ``dist/TrayProxy``
with build.spec and sets it); skipped otherwise, because building takes a quarter of a minute.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.sync.client
import xdrive
from aiohttp import web
from background import BackgroundServer, free_port, wait_until
from desktop_session import INSTALL_HINT, DesktopSession
from listen_helpers import proxy_answers
from upstreams import echo_app, sse_app, ws_echo_app

from desktop.platforms.dbus import has_bus_name

BUNDLE = os.environ.get("TRAYPROXY_BUNDLE", "")
pytestmark = pytest.mark.skipif(not BUNDLE, reason="set TRAYPROXY_BUNDLE to a built dist/TrayProxy/TrayProxy")
START_TIMEOUT_S = 20.0
SECRET_SERVICE = "org.freedesktop.secrets"


def upstream_app() -> web.Application:
    """One target for all three kinds of traffic: /sse events, /ws echo, anything else echoed."""
    app = web.Application()
    app.add_subapp("/events/", sse_app(events=5, gap_s=0.05))
    app.add_subapp("/socket/", ws_echo_app())
    app.add_subapp("/echo/", echo_app())
    return app


def test_bundle_prints_its_version() -> None:
    result = subprocess.run([BUNDLE, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("TrayProxy ")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """``TrayProxy serve`` from the bundle in front of a local upstream; yields its base URL."""
    with BackgroundServer(upstream_app()) as upstream:
        port = free_port()
        env = {**os.environ, "HOME": str(tmp_path)}
        process = subprocess.Popen(
            [BUNDLE, "serve", "--target", upstream.url, "--host", "127.0.0.1", "--port", str(port), "-q"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=1.0), timeout_s=START_TIMEOUT_S)
            yield base
        finally:
            process.send_signal(signal.SIGTERM)  # on Windows: TerminateProcess, exit code 1
            _, stderr = process.communicate(timeout=20)
            assert process.returncode == 0 or sys.platform == "win32", stderr


def test_bundle_serves_http_sse_and_websocket(served: str) -> None:
    """The frozen proxy forwards a request, streams SSE events one by one, and bridges a WebSocket."""
    response = httpx.post(served + "/echo/v1/chat?x=1", content=b"hello", trust_env=False)
    assert response.status_code == 200
    assert response.json()["raw_path"] == "/echo/v1/chat?x=1"
    with httpx.stream("GET", served + "/events/sse", trust_env=False, timeout=10) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert len(events) == 6
    assert events[-1] == "data: [DONE]"
    with websockets.sync.client.connect(served.replace("http", "ws") + "/socket/ws") as ws:
        ws.send("ping over the bundle")
        assert ws.recv(timeout=10) == "ping over the bundle"


def test_bundle_tray_docks_and_quits_from_its_menu(desktop: DesktopSession, tmp_path: Path) -> None:
    """The bundled tray loads the menu-capable AppIndicator backend on the private desktop, its
    icon docks, and Quit in its menu ends it with status 0."""
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n[targets.a]\nurl = "http://127.0.0.1:9"\n')
    env = desktop.env({**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "TMPDIR": str(tmp_path)})
    log = tmp_path / "tray.stderr"
    with log.open("wb") as err:
        process = subprocess.Popen([BUNDLE, "--config", str(config)], env=env, stderr=err, stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: "tray ready" in log.read_text(), timeout_s=START_TIMEOUT_S), log.read_text()
        assert "backend=appindicator menu=yes" in log.read_text()
        x = desktop.x
        assert x is not None
        [icon] = xdrive.wait_until(x.docked_icons, START_TIMEOUT_S, "the icon to dock")
        x.click(icon, button=3)
        xdrive.wait_until(x.popup_menus, START_TIMEOUT_S, "the menu to open")
        # Down past Stop proxy, Target, Cache, Copy local URL, Copy environment, Open inspector, Open
        # config file, Reload config, Open log folder, Start at login and About, to Quit.
        x.press(*("Down",) * 12, "Return")
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.returncode == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bundle_carries_the_license_texts_of_what_it_ships() -> None:
    """Every shipped distribution's metadata (with its license files) and Python's license."""
    internal = Path(BUNDLE).parent / "_internal"
    names = {p.name.split("-")[0].lower() for p in internal.glob("*.dist-info")}
    assert {"aiohttp", "pystray", "pillow", "platformdirs", "keyring", "tomlkit"} <= names
    assert (internal / "licenses" / "python" / "LICENSE.txt").is_file()
    assert (internal / "licenses" / "trayproxy" / "LICENSE").is_file()


def test_bundle_ships_the_inspector_page() -> None:
    """The inspector reads its page from beside its module (desktop/inspector/web.py, whose
    __file__ in the bundle is under _internal): the same files must be there, or the app would
    fail to start with the inspector on."""
    source = Path(__file__).resolve().parents[2] / "desktop" / "inspector" / "page"
    shipped = Path(BUNDLE).parent / "_internal" / "desktop" / "inspector" / "page"
    for name in ("index.html", "app.js", "style.css"):
        assert (shipped / name).read_bytes() == (source / name).read_bytes(), name


@pytest.fixture
def secret_service(bare_desktop: DesktopSession, tmp_path: Path) -> Iterator[dict[str, str]]:
    """gnome-keyring's Secret Service on a private bus, its login keyring made and unlocked in
    an empty home; yields the environment of an app started in that session."""
    if shutil.which("gnome-keyring-daemon") is None:
        message = f"the keychain test needs gnome-keyring-daemon (gnome-keyring): {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "keyring-home"
    home.mkdir(mode=0o700)
    env = bare_desktop.env({**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_RUNTIME_DIR": str(home)})
    env.pop("PYTHON_KEYRING_BACKEND", None)  # the tests' "no keychain" backend: keyring picks its own
    daemon = subprocess.Popen(
        ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert daemon.stdin is not None
    daemon.stdin.write(b"login keyring password")  # --unlock reads it from stdin until EOF
    daemon.stdin.close()
    try:
        assert wait_until(lambda: has_bus_name(bare_desktop.bus_address, SECRET_SERVICE), timeout_s=START_TIMEOUT_S)
        yield env
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Secret Service is the Linux keychain")
def test_bundle_keeps_a_key_in_the_secret_service_and_sends_it(secret_service: dict[str, str], tmp_path: Path) -> None:
    """The Linux bundle ships without cryptography (11.4 MiB) and encrypts its Secret Service
    session with its own stand-in: ``config set-key`` stores the key in gnome-keyring, and
    ``serve`` reads it back and sends it to the target, byte for byte."""
    assert not (Path(BUNDLE).parent / "_internal" / "cryptography").exists()
    key = "sk-frozen-" + secrets.token_urlsafe(24)
    with BackgroundServer(echo_app()) as upstream:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(
            f'[listen]\nhosts = ["127.0.0.1"]\nport = {port}\n[targets.a]\nurl = "{upstream.url}"\n'
            'key = { keyring = true }\nheaders = { Authorization = "Bearer {key}" }\n'
        )
        stored = subprocess.run(
            [BUNDLE, "config", "set-key", "--config", str(config), "a"],
            input=key + "\n",
            env=secret_service,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stored.returncode == 0, stored.stderr
        assert "stored the key for 'a' in the OS keychain" in stored.stdout + stored.stderr
        process = subprocess.Popen(
            [BUNDLE, "serve", "--config", str(config), "-q"], env=secret_service, stderr=subprocess.PIPE, text=True
        )
        try:
            assert wait_until(lambda: proxy_answers(port, timeout_s=1.0), timeout_s=START_TIMEOUT_S)
            response = httpx.get(f"http://127.0.0.1:{port}/v1/models", trust_env=False, timeout=10)
            assert response.status_code == 200, response.text
            sent = {name.lower(): value for name, value in response.json()["headers"]}
            assert sent["authorization"] == f"Bearer {key}"
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert key not in stderr
