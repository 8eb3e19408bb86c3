"""The tray app as a person uses it: ``python -m desktop`` on a private desktop, driven by mouse
and keyboard.

Each test starts the real app as a subprocess inside the session's desktop (Xvfb, bus, trayer,
dunst: see ``desktop_session``), with this test's HOME and XDG dirs, a config in ``tmp_path``
listening on 127.0.0.1 at a free port, and targets ``alpha`` and ``beta`` that are echo servers
on 127.0.0.1. The menu is opened with a right click on the docked icon and used with the
keyboard (XTEST input: GTK treats it as real). What the menu shows is read back from the
menu model the app exports on the session bus (``com.canonical.dbusmenu``, which the
AppIndicator backend publishes for the same GtkMenu it pops up), and notifications from
dunst's history. Nothing leaves 127.0.0.1.

Set ``TRAYPROXY_README_SHOT=docs/tray-menu.png`` to also save the cropped screenshot of the open
menu taken in the target test there (the README's picture).
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from background import BackgroundServer, free_port
from PIL import Image
from upstreams import Seen, echo_app
from xdrive import Win, XDriver, wait_until

from desktop.tray.app import ICON_SIZE_PX
from desktop.tray.icons import IconState, draw_icon

REPO = Path(__file__).resolve().parents[2]
# The app is up in about 0.4 s and every menu step takes well under 1 s here; 10 s covers a
# loaded CI runner (and both cores busy) without letting a hung app stall the run for long.
UI_TIMEOUT_S = 10.0
# "Quit exits within a few seconds": QUIT_GRACE_S (3 s) is the most open streams may get, and
# with none open the app exits in well under a second.
QUIT_TIMEOUT_S = 5.0
# A plain request through the proxy to a local echo server; generous for a busy machine.
REQUEST_TIMEOUT_S = 5.0
# Where AppIndicator publishes the menu of the icon with id "TrayProxy" (pystray passes the
# icon's name as the indicator id).
DBUSMENU_PATH = "/org/ayatana/NotificationItem/TrayProxy/Menu"
README_SHOT_ENV = "TRAYPROXY_README_SHOT"
# The README's picture shows the default port, as a user sees it, when that port is free.
README_PORT = 8000
# Margin around panel and menus in the README crop, so the menu's edge does not touch the border.
SHOT_MARGIN_PX = 4
# Mean grey level (0-255) above which the menu's area counts as drawn: Adwaita's menu is near
# white with dark text (about 240), the empty root window black (0).
MENU_MIN_BRIGHTNESS = 128
# A recognisable fake key: unique enough that finding it anywhere means it leaked.
FAKE_KEY = "sk-trayproxy-test-LEAK-CANARY-7f3a9c41d2e8b6"
KEY_VARIABLE = "ALPHA_TEST_KEY"

# Keyboard paths through the open menu. GTK skips the disabled status line and separators, so
# the first Down selects "Stop proxy"/"Start proxy"; Right opens a submenu with its first item
# selected. The menu, top to bottom: Stop/Start proxy, Target ▸, Cache ▸, Copy local URL, Copy
# environment ▸, Open inspector, Open config file, Reload config, Open log folder, Start at login,
# About, Quit.
TOGGLE_KEYS = ("Down", "Return")
OPEN_TARGETS_KEYS = ("Down", "Down", "Right")
QUIT_WHILE_RUNNING_KEYS = ("Down",) * 12 + ("Return",)
# A right click whose menu has not shown by then is tried again.
MENU_OPEN_RETRY_S = 2.0
COPY_URL_KEYS = ("Down",) * 4 + ("Return",)
# Copy environment ▸ opens on its first entry, the POSIX shell lines.
COPY_POSIX_ENVIRONMENT_KEYS = ("Down",) * 5 + ("Right", "Return")
OPEN_INSPECTOR_KEYS = ("Down",) * 6 + ("Return",)

CONFIG_TEMPLATE = """\
# TrayProxy test config: these comments must survive the app's own writes.
active = "alpha"  # chosen from the tray

[listen]
hosts = ["127.0.0.1"]  # loopback only
port = {port}

# The two local upstreams.
[targets.alpha]
url = "{alpha}"
{alpha_extra}
[targets.beta]
url = "{beta}"
"""


# -- local upstreams -------------------------------------------------------------------------


@dataclass
class Upstream:
    """A local echo server and what it received."""

    url: str
    seen: Seen


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    """``alpha`` and ``beta``: echo servers on 127.0.0.1, each keeping what it received."""
    seen_alpha, seen_beta = Seen(), Seen()
    with BackgroundServer(echo_app(seen_alpha)) as alpha, BackgroundServer(echo_app(seen_beta)) as beta:
        yield {"alpha": Upstream(alpha.url, seen_alpha), "beta": Upstream(beta.url, seen_beta)}


def unauthorized_app(authorizations: list[str]) -> web.Application:
    """Answers everything with 401 in the OpenAI error shape, as an API does for a bad key;
    each request's Authorization header is appended to ``authorizations``."""

    async def refuse(request: web.Request) -> web.Response:
        authorizations.append(request.headers.get("Authorization", ""))
        body = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


# -- the app under test ----------------------------------------------------------------------


@dataclass
class RunningTray:
    """One ``python -m desktop`` started by a test."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path
    stderr_path: Path
    env: dict[str, str]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str) -> None:
        """Wait until the app writes ``text`` to stderr; fail early if it exits."""

        def logged() -> bool:
            assert self.process.poll() is None or text in self.stderr(), (
                f"the app exited with {self.process.returncode} before logging {text!r}:\n{self.stderr()}"
            )
            return text in self.stderr()

        wait_until(logged, UI_TIMEOUT_S, f"{text!r} in the app's log")

    def menu_labels(self) -> list[str]:
        """The labels of the icon's menu as published on the bus, submenus after their item."""
        return read_menu_labels(self.env, self.process.pid)

    def status_line(self) -> str:
        labels = self.menu_labels()
        return labels[0] if labels else ""

    def wait_for_status(self, fragment: str) -> str:
        """Wait until the menu's first line contains ``fragment``; return that line."""

        def line_with_fragment() -> str | None:
            line = self.status_line()
            return line if fragment in line else None

        return wait_until(
            line_with_fragment,
            UI_TIMEOUT_S,
            f"the menu's status line to show {fragment!r}",
        )


def write_config(tmp_path: Path, port: int, alpha: str, beta: str, alpha_extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_TEMPLATE.format(port=port, alpha=alpha, beta=beta, alpha_extra=alpha_extra))
    return config


@pytest.fixture
def tray_env(desktop_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The desktop's environment with this test's HOME and XDG dirs (set by tests/conftest.py),
    and TMPDIR in ``tmp_path`` so pystray's icon file lands there."""
    return {**desktop_env, "TMPDIR": str(tmp_path)}


@pytest.fixture
def launch(tray_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., RunningTray]]:
    """Start ``python -m desktop --config PATH`` and wait for "tray ready"; every app started
    is stopped afterwards (SIGTERM, then SIGKILL)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, port: int, *, extra_env: dict[str, str] | None = None) -> RunningTray:
        stderr_path = tmp_path / f"tray-{len(started)}.stderr"
        env = {**tray_env, **(extra_env or {})}
        with stderr_path.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "desktop", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        started.append(process)
        app = RunningTray(process, port, config, stderr_path, env)
        app.wait_for_log("tray ready")
        return app

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(QUIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- looking at the desktop ------------------------------------------------------------------


def gdbus(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["gdbus", *args], env=env, capture_output=True, text=True, timeout=UI_TIMEOUT_S)
    if result.returncode != 0:
        raise ConnectionError(result.stderr.strip())
    return result.stdout


def bus_name_of(env: dict[str, str], pid: int) -> str | None:
    """The unique bus name owned by process ``pid``, if it has one."""
    bus = ("--session", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus")
    names: list[str] = re.findall(
        r"'(:[0-9.]+)'", gdbus(env, "call", *bus, "--method", "org.freedesktop.DBus.ListNames")
    )
    for name in names:
        try:
            owner = gdbus(
                env, "call", *bus, "--method", "org.freedesktop.DBus.GetConnectionUnixProcessID", name
            )
        except ConnectionError:  # gone meanwhile
            continue
        if re.search(rf"\b{pid}\b", owner):
            return name
    return None


def read_menu_labels(env: dict[str, str], pid: int) -> list[str]:
    """The labels of app ``pid``'s tray menu, in order (each submenu's after its item), read
    with dbusmenu's GetLayout; empty until the menu is published."""
    name = bus_name_of(env, pid)
    if name is None:
        return []
    try:
        layout = gdbus(
            env,
            "call",
            "--session",
            "--dest",
            name,
            "--object-path",
            DBUSMENU_PATH,
            "--method",
            "com.canonical.dbusmenu.GetLayout",
            "--",  # the arguments follow; "-1" is not an option
            "0",
            "-1",
            "['label']",
        )
    except ConnectionError:
        return []
    # GVariant text: {'label': <'Stop proxy'>}; a label with a ' is printed in double quotes.
    labels = [
        single or double for single, double in re.findall(r"'label': <(?:'([^']*)'|\"([^\"]*)\")>", layout)
    ]
    return labels[1:]  # the first is the root item's placeholder, "Label Empty"


def notifications(env: dict[str, str]) -> list[str]:
    """Every notification dunst has shown in this desktop, as "summary: body"; the ones on
    screen are closed first, which moves them into the history."""
    subprocess.run(["dunstctl", "close-all"], env=env, check=True, timeout=UI_TIMEOUT_S)
    history = json.loads(
        subprocess.run(
            ["dunstctl", "history"], env=env, check=True, capture_output=True, text=True, timeout=UI_TIMEOUT_S
        ).stdout
    )
    return [f"{n['summary']['data']}: {n['body']['data']}" for group in history["data"] for n in group]


def wait_for_notification(env: dict[str, str], fragment: str) -> str:
    return wait_until(
        lambda: next((n for n in notifications(env) if fragment in n), None),
        UI_TIMEOUT_S,
        f"a notification containing {fragment!r}",
    )


def tray_icon(x: XDriver) -> Win:
    icons = wait_until(x.docked_icons, UI_TIMEOUT_S, "the icon to dock")
    assert len(icons) == 1, f"expected one docked icon, found {icons}"
    return icons[0]


def open_menu(x: XDriver) -> list[Win]:
    """Right-click the icon until its menu shows. A click that lands while GTK still holds the
    pointer grab of a menu that just closed is swallowed (seen once in CI, loaded machine)."""
    deadline = time.monotonic() + UI_TIMEOUT_S
    while True:
        x.click(tray_icon(x), button=3)
        try:
            return wait_until(x.popup_menus, MENU_OPEN_RETRY_S, "the menu to open")
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise


def use_menu(x: XDriver, keys: tuple[str, ...]) -> None:
    """Open the icon's menu, press ``keys``, and wait for the menu to close."""
    open_menu(x)
    x.press(*keys)
    wait_until(lambda: not x.popup_menus(), UI_TIMEOUT_S, "the menu to close")


# -- talking to the proxy --------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` through the proxy at 127.0.0.1:``port``: status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def is_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S):
            return True
    except ConnectionRefusedError:
        return False


def paths_seen(upstream: Upstream) -> list[object]:
    return [request["raw_path"] for request in upstream.seen.requests]


# -- tests -----------------------------------------------------------------------------------


def test_icon_docks_and_its_menu_shows_where_the_proxy_runs(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """The icon appears in the tray with the status as its tooltip, a right click opens the
    menu, whose first line says "running on 127.0.0.1:PORT → alpha", and the port forwards to
    alpha (not beta)."""
    port = free_port()
    app = launch(write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url), port)
    expected = f"TrayProxy: running on 127.0.0.1:{port} → alpha"

    assert app.wait_for_status("running") == expected
    wait_until(lambda: tray_icon(x).name == expected, UI_TIMEOUT_S, "the tooltip to show the status")
    assert app.menu_labels()[1:4] == ["Stop proxy", "Target", "alpha"]
    open_menu(x)
    x.press("Escape")
    wait_until(lambda: not x.popup_menus(), UI_TIMEOUT_S, "the menu to close")

    status, body = get(port, "/v1/models?from=test")
    assert status == 200
    assert json.loads(body)["raw_path"] == "/v1/models?from=test"
    assert paths_seen(upstreams["alpha"]) == ["/v1/models?from=test"]
    assert paths_seen(upstreams["beta"]) == []


def test_choosing_beta_in_the_menu_switches_and_saves_it_keeping_comments(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """Target ▸ beta, chosen with the keyboard in the real menu, sends the next request to
    beta and writes ``active = "beta"`` into the config file, every comment kept."""
    port = README_PORT if os.environ.get(README_SHOT_ENV) and not is_listening(README_PORT) else free_port()
    config = write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url)
    original = config.read_text()
    app = launch(config, port)
    app.wait_for_status("→ alpha")

    open_menu(x)
    x.press(*OPEN_TARGETS_KEYS)
    menus = wait_until(
        lambda: shown if len(shown := x.popup_menus()) == 2 else None, UI_TIMEOUT_S, "the submenu"
    )
    save_menu_shot(x, menus, tmp_path / "tray-menu.png")
    x.press("Down", "Return")  # alpha is selected on opening; beta is next
    wait_until(lambda: not x.popup_menus(), UI_TIMEOUT_S, "the menu to close")

    assert app.wait_for_status("→ beta") == f"TrayProxy: running on 127.0.0.1:{port} → beta"
    assert get(port, "/after-switch")[0] == 200
    assert paths_seen(upstreams["beta"]) == ["/after-switch"]
    assert paths_seen(upstreams["alpha"]) == []
    wait_until(lambda: 'active = "beta"' in config.read_text(), UI_TIMEOUT_S, "the choice to be saved")
    assert config.read_text() == original.replace('active = "alpha"', 'active = "beta"')


def save_menu_shot(x: XDriver, menus: list[Win], path: Path) -> None:
    """Screenshot the panel and the open menus, cropped to them; also to the README's picture
    when TRAYPROXY_README_SHOT names a file."""
    from PIL import ImageGrab

    areas = [*x.panels(), *menus]
    left = max(0, min(a.x for a in areas) - SHOT_MARGIN_PX)
    top = max(0, min(a.y for a in areas) - SHOT_MARGIN_PX)
    right = max(a.x + a.width for a in areas) + SHOT_MARGIN_PX
    bottom = max(a.y + a.height for a in areas) + SHOT_MARGIN_PX
    image = ImageGrab.grab(bbox=(left, top, right, bottom), xdisplay=x.display)
    # A menu is drawn on a light background (the default GTK theme) over the black root
    # window: a dark menu area means the grab missed it or it was not drawn yet.
    from PIL import ImageStat

    menu = menus[0]
    menu_area = image.convert("L").crop(
        (menu.x - left, menu.y - top, menu.x - left + menu.width, menu.y - top + menu.height)
    )
    assert ImageStat.Stat(menu_area).mean[0] > MENU_MIN_BRIGHTNESS, "the screenshot shows no open menu"
    image.save(path)
    target = os.environ.get(README_SHOT_ENV)
    if target:
        shutil.copyfile(path, REPO / target)


def test_stop_closes_the_port_and_start_opens_it_again(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """Stop proxy frees the port (tools get "connection refused"); Start proxy serves again."""
    port = free_port()
    app = launch(write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url), port)
    app.wait_for_status("running")
    assert is_listening(port)

    use_menu(x, TOGGLE_KEYS)
    assert app.wait_for_status("stopped") == "TrayProxy: stopped (alpha)"
    assert not is_listening(port)
    assert "Start proxy" in app.menu_labels()

    use_menu(x, TOGGLE_KEYS)
    app.wait_for_status("running")
    assert get(port, "/again")[0] == 200
    assert paths_seen(upstreams["alpha"]) == ["/again"]


def test_quit_exits_cleanly_and_frees_the_port(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """Quit in the menu ends the app with status 0 within a few seconds, the icon leaves the
    tray and the port is closed; the terminal shows no GTK assertion noise (a person reads a
    "Gdk-CRITICAL" line as TrayProxy failing)."""
    port = free_port()
    app = launch(write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url), port)
    app.wait_for_status("running")

    open_menu(x)
    x.press(*QUIT_WHILE_RUNNING_KEYS)
    assert app.process.wait(QUIT_TIMEOUT_S) == 0, app.stderr()
    assert not is_listening(port)
    wait_until(lambda: not x.docked_icons(), UI_TIMEOUT_S, "the icon to leave the tray")
    assert "-CRITICAL **" not in app.stderr(), app.stderr()
    assert "-WARNING **" not in app.stderr(), app.stderr()


def test_second_launch_exits_and_the_running_one_says_it_is_already_running(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """Starting TrayProxy again (same user) does not start a second copy: the new one exits 0
    saying so, and the running one shows a notification."""
    port = free_port()
    config = write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url)
    first = launch(config, port)
    first.wait_for_status("running")

    second = subprocess.run(
        [sys.executable, "-m", "desktop", "--config", str(config)],
        cwd=REPO,
        env=first.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=UI_TIMEOUT_S,
    )
    assert second.returncode == 0, second.stderr
    assert "TrayProxy is already running" in second.stderr
    first.wait_for_log("notification: TrayProxy is already running")
    assert wait_for_notification(first.env, "already running") == "TrayProxy: TrayProxy is already running"
    assert first.process.poll() is None


def test_port_taken_by_another_program_is_shown_in_the_tray(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """When another program holds the port, the tray still comes up; its status line and a
    notification say the port is in use."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        app = launch(write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url), port)

        problem = f"Port {port} on 127.0.0.1 is already in use by another program"
        line = app.wait_for_status("already in use")
        assert line.startswith("TrayProxy: not running — ")
        assert problem in line
        assert problem in tray_icon(x).name
        assert problem in wait_for_notification(app.env, problem)
        assert "Start proxy" in app.menu_labels()


def test_key_never_appears_in_stderr_log_file_or_notifications(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """A target whose key (from an environment variable) is refused with 401: the person is
    told, and the key is in none of stderr, the log file or the notification."""
    port = free_port()
    authorizations: list[str] = []
    with BackgroundServer(unauthorized_app(authorizations)) as refusing:
        key_lines = f'key = {{ env = "{KEY_VARIABLE}" }}\nheaders = {{ Authorization = "Bearer {{key}}" }}\n'
        config = write_config(tmp_path, port, refusing.url, upstreams["beta"].url, alpha_extra=key_lines)
        app = launch(config, port, extra_env={KEY_VARIABLE: FAKE_KEY})
        app.wait_for_status("running")

        status, _ = get(port, f"/v1/chat/completions?key={FAKE_KEY}")
        assert status == 401
        assert authorizations == [f"Bearer {FAKE_KEY}"]  # the proxy did add the key
        app.wait_for_log("notification: alpha rejected the key (HTTP 401)")
        shown = wait_for_notification(app.env, "rejected the key")
        assert "rejected the key" in app.status_line()

    log_files = list((Path(app.env["XDG_STATE_HOME"]) / "TrayProxy" / "log").glob("*.log*"))
    assert log_files, "the tray wrote no log file"
    written = {path.name: path.read_text(errors="replace") for path in log_files}
    assert any("rejected the key" in text for text in written.values())
    for where, text in {"stderr": app.stderr(), "notification": shown, **written}.items():
        assert FAKE_KEY not in text, f"the key leaked into {where}"
        assert FAKE_KEY[-12:] not in text, f"part of the key leaked into {where}"


# What an SDK does first with the pasted variables: list the models at its base URL.
FETCH_MODELS_STATUS = (
    "import os, urllib.request; print(urllib.request.urlopen(os.environ['OPENAI_BASE_URL'] + '/models').status)"
)


def read_clipboard(env: dict[str, str]) -> str:
    """The X CLIPBOARD selection's text on the private desktop, as a paste would get it."""
    done = subprocess.run(
        ["xclip", "-o", "-selection", "clipboard"],
        env=env,
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT_S,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


@pytest.mark.skipif(shutil.which("xclip") is None, reason="xclip is not installed (tests/system-deps.sh)")
def test_copy_local_url_and_environment_put_working_text_on_the_clipboard(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """Copy local URL puts the proxy's address on the clipboard; Copy environment ▸ POSIX puts
    lines that, pasted into a shell, send an SDK-style request through TrayProxy."""
    port = free_port()
    app = launch(write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url), port)
    app.wait_for_status("running")
    url = f"http://127.0.0.1:{port}"

    use_menu(x, COPY_URL_KEYS)
    assert wait_until(lambda: read_clipboard(app.env) == url, UI_TIMEOUT_S, "the URL on the clipboard")

    use_menu(x, COPY_POSIX_ENVIRONMENT_KEYS)
    lines = wait_until(
        lambda: (text := read_clipboard(app.env)) != url and text, UI_TIMEOUT_S, "the environment lines"
    )
    assert f"export OPENAI_BASE_URL={url}/v1" in lines.splitlines()
    pasted = subprocess.run(
        ["sh", "-c", lines + f'exec "{sys.executable}" -c "$FETCH"'],
        env={**os.environ, "FETCH": FETCH_MODELS_STATUS},
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT_S,
        check=False,
    )
    assert pasted.stdout.strip() == "200", pasted.stderr
    assert paths_seen(upstreams["alpha"]) == ["/v1/models"]


# A stand-in xdg-open: records what it was asked to open (the desktop's default browser would
# open it), one argument per line.
RECORDING_OPENER = """#!/bin/sh
printf '%s\\n' "$1" >> "$OPENED_LOG"
"""


def test_open_inspector_hands_the_browser_a_private_file_that_lets_it_in_once(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path
) -> None:
    """Open inspector gives the desktop's opener a local 0600 file, never a URL with the code
    (that would show in the process list); the link inside lets one browser in, which then
    reads the list (the request made before is in it), and does not work a second time."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text(RECORDING_OPENER)
    opener.chmod(0o755)
    opened_log = tmp_path / "opened.log"
    port = free_port()
    app = launch(
        write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url),
        port,
        extra_env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OPENED_LOG": str(opened_log)},
    )
    app.wait_for_status("running")
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/v1/models", timeout=REQUEST_TIMEOUT_S).status_code == 200

    use_menu(x, OPEN_INSPECTOR_KEYS)
    opened = wait_until(
        lambda: opened_log.exists() and opened_log.read_text().strip(), UI_TIMEOUT_S, "the opener to run"
    )
    handed = Path(opened.splitlines()[0])
    assert "code=" not in str(handed)
    assert handed.stat().st_mode & 0o777 == 0o600
    link = re.search(r'url=([^"]+)"', handed.read_text())
    assert link is not None
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as browser:
        opened_page = browser.get(html.unescape(link.group(1)))
        assert opened_page.status_code == 200  # lets this one in
        # It sends the browser on to this run's page path (the cookie is scoped to it).
        page = re.search(r'url=(/__trayproxy/inspector/[^"/]+/)"', opened_page.text)
        assert page is not None
        listed = browser.get(f"{url}{page.group(1)}api/exchanges", headers={"Sec-Fetch-Site": "same-origin"})
        assert listed.status_code == 200
        assert [row["path"] for row in listed.json()["rows"]] == ["/v1/models"]
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as another:
        assert another.get(html.unescape(link.group(1))).status_code == 403  # once only


# Starts the real CLI with no command (the tray) after making the tray's start fail the way an
# unforeseen bug would, with a key in the error text that must not reach the screen.
CRASHING_START = f"""
import sys
from desktop import cli
from desktop.commands import tray

def broken(args):
    raise RuntimeError("unforeseen failure while holding {FAKE_KEY}")

tray.start_tray = broken
sys.exit(cli.main([]))
"""


def test_a_crash_at_start_is_logged_and_shown_without_the_error_text(
    tray_env: dict[str, str], tmp_path: Path
) -> None:
    """A double-clicked app that fails at start-up does not vanish silently: it exits 1, the
    log file has the traceback, and a notification that stays says it stopped and where the
    details are, naming the error's type but not its text (which could quote a key)."""
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_START],
        cwd=REPO,
        env=tray_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=UI_TIMEOUT_S,
    )
    assert done.returncode == 1, done.stderr
    log_file = Path(tray_env["XDG_STATE_HOME"]) / "TrayProxy" / "log" / "trayproxy.log"
    logged = log_file.read_text()
    assert "TrayProxy stopped because of an unexpected error" in logged
    assert "RuntimeError" in logged
    assert FAKE_KEY not in logged  # the log masks key shapes, tracebacks included
    shown = wait_for_notification(tray_env, "TrayProxy stopped")
    assert "(RuntimeError)" in shown
    assert str(log_file) in shown
    assert FAKE_KEY not in shown
    assert FAKE_KEY not in done.stderr


def test_alert_text_reaches_the_notification_server_verbatim(desktop_env: dict[str, str]) -> None:
    """Quotes, backslashes and non-ASCII in an alert arrive as written (gdbus parses its
    arguments as GVariant text, where a bare ' would end the string)."""
    from desktop import platforms

    title, body = "It's TrayProxy", "C:\\Users\\me's config → line 3 'port'"
    assert platforms.alert(title, body, environ=desktop_env) == (True, "shown through the notification server")
    assert wait_for_notification(desktop_env, title) == f"{title}: {body}"


def overloaded_app(keys: list[str]) -> web.Application:
    """Answers everything with Anthropic's 529 (overloaded); each request's x-api-key is
    appended to ``keys``."""

    async def overloaded(request: web.Request) -> web.Response:
        keys.append(request.headers.get("x-api-key", ""))
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return web.json_response(body, status=529)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", overloaded)
    return app


# Seconds alpha is tried last after failing 3 times in a row ([failover] cooldown): long enough
# to read the menu while it lasts, short enough to see it end.
ROUTES_TEST_COOLDOWN_S = 6


def test_a_failover_is_notified_once_and_the_menu_shows_claims_and_the_cool_down(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """alpha (chosen, key from a variable) answers 529 and has beta as its fallback; beta
    claims /beta. The Target menu shows beta's claim; three requests each get beta's 200; the
    first failover is told as 'alpha answered 529 (overloaded); beta took over' and the next
    two, the same cause, are not; after the third alpha is tried last, which the status line
    and the Target menu show until the cool-down ends, when the menu is redrawn though nothing
    else changed. The key is in no notification and not in the log."""
    port = free_port()
    keys: list[str] = []
    with BackgroundServer(overloaded_app(keys)) as overloaded:
        alpha_extra = (
            f'key = {{ env = "{KEY_VARIABLE}" }}\nheaders = {{ x-api-key = "{{key}}" }}\nfallbacks = ["beta"]\n'
        )
        config = write_config(tmp_path, port, overloaded.url, upstreams["beta"].url, alpha_extra=alpha_extra)
        config.write_text(config.read_text() + f'prefix = "/beta"\n[failover]\ncooldown = {ROUTES_TEST_COOLDOWN_S}\n')
        app = launch(config, port, extra_env={KEY_VARIABLE: FAKE_KEY})
        app.wait_for_status("running")
        assert "beta — /beta" in app.menu_labels()

        assert [get(port, "/v1/models")[0] for _ in range(3)] == [200, 200, 200]
        assert keys == [FAKE_KEY] * 3  # alpha did get its key each time
        shown = wait_for_notification(app.env, "took over")
        assert shown == "TrayProxy: alpha answered 529 (overloaded); beta took over"
        line = app.wait_for_status("alpha tried last until")
        assert line.startswith("TrayProxy: running on ")
        cooling = [label for label in app.menu_labels() if label.startswith("alpha — ")]
        assert len(cooling) == 1
        assert cooling[0].startswith("alpha — tried last until ")
        assert cooling[0].endswith(" (failing)")

        wait_until(
            lambda: "tried last" not in app.status_line(),
            ROUTES_TEST_COOLDOWN_S + UI_TIMEOUT_S,
            "the cool-down to leave the status line",
        )
        assert "alpha" in app.menu_labels()
    assert [n for n in notifications(app.env) if "took over" in n] == [shown]
    assert app.stderr().count("notification: alpha answered 529") == 1
    for where, text in {"stderr": app.stderr(), "notification": shown}.items():
        assert FAKE_KEY not in text, f"the key leaked into {where}"


def test_a_taken_port_of_a_target_with_its_own_port_is_notified(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """beta has a port of its own (``port = N``) that another program holds: the main port
    still serves alpha, and a notification names beta's port as in use."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        port = free_port()
        config = write_config(tmp_path, port, upstreams["alpha"].url, upstreams["beta"].url)
        config.write_text(config.read_text() + f"port = {taken}\n")
        app = launch(config, port)
        app.wait_for_status("running")
        assert get(port, "/main")[0] == 200
        shown = wait_for_notification(app.env, str(taken))
        assert "already in use" in shown, shown


# -- the icon's colour -------------------------------------------------------------------------

# A colour counts as the icon's when this share of the docked icon's pixels has it (the disc
# fills about 40 % of a 32 px slot; the rest is the glyph, the rim and the panel).
ICON_COLOUR_MIN_SHARE = 0.2


def icon_fill(state: IconState) -> tuple[int, int, int]:
    """The disc's colour for ``state``: the most common opaque colour of the drawn icon."""
    colours = draw_icon(state, ICON_SIZE_PX).getcolors(ICON_SIZE_PX * ICON_SIZE_PX) or []
    _count, (red, green, blue, _) = max((c for c in colours if c[1][3] == 255), key=lambda c: c[0])
    return red, green, blue


def shown_icon_state(x: XDriver, shot: Path) -> IconState | None:
    """The state whose colour fills the docked icon as it is on screen now, read from its pixels."""
    image = Image.open(x.screenshot(shot, tray_icon(x))).convert("RGB")
    colours = dict((colour, count) for count, colour in image.getcolors(image.width * image.height) or [])
    total = image.width * image.height
    for state in (IconState.RUNNING, IconState.STOPPED, IconState.ERROR):
        if colours.get(icon_fill(state), 0) >= ICON_COLOUR_MIN_SHARE * total:
            return state
    return None


@pytest.mark.parametrize("cause", ["key missing", "config error", "port taken", "own port taken"])
def test_icon_turns_red_for_every_cause_the_readme_lists(
    launch: Callable[..., RunningTray], upstreams: dict[str, Upstream], x: XDriver, tmp_path: Path, cause: str
) -> None:
    """The README: the icon is "red when something needs you: the port is taken, the config has
    an error, the key is missing or rejected, ...". Read from the docked icon's pixels: before,
    only a target's answer (401, refused connection) turned it red, and an unreadable key, a
    broken edit or a taken port of a target's own left it blue."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        port = taken if cause == "port taken" else free_port()
        alpha_extra = 'key = { env = "TP_UNSET_KEY" }\nheaders = { Authorization = "Bearer {key}" }\n'
        config = write_config(
            tmp_path,
            port,
            upstreams["alpha"].url,
            upstreams["beta"].url,
            alpha_extra=alpha_extra if cause == "key missing" else "",
        )
        if cause == "own port taken":
            config.write_text(config.read_text() + f"port = {taken}\n")
        app = launch(config, port)
        if cause == "config error":
            app.wait_for_status("running")
            wait_until(
                lambda: shown_icon_state(x, tmp_path / "before.png") is IconState.RUNNING,
                UI_TIMEOUT_S,
                "a blue icon",
            )
            config.write_text(config.read_text() + "[listen\n")
        # The start of each problem: the menu's line is cut at 90 characters.
        problem = {
            "key missing": "target 'alpha': the environment variable",
            "config error": "the config file has an error",
            "port taken": "already in use",
            "own port taken": f"beta on port {taken}",
        }[cause]
        app.wait_for_status(problem)
        assert wait_until(
            lambda: shown_icon_state(x, tmp_path / "icon.png") is IconState.ERROR, UI_TIMEOUT_S, "a red icon"
        )
