"""Tray backend detection against real desktops, and a real icon docked, clicked and used.

What a user would notice: TrayProxy starting with no icon, or an icon with no menu, and no
word on why; or a crash instead of a message on a server with no display. Each situation is
made for real: the private desktop from ``desktop_session`` (Xvfb, session bus, trayer panel,
dunst), a display and bus with no tray, no display at all, and a Python without PyGObject.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from desktop_session import DesktopSession
from xdrive import XDriver, wait_until

from desktop.platforms.dbus import has_bus_name
from desktop.tray.backend import (
    STATUS_NOTIFIER_WATCHER,
    LoadedBackend,
    Session,
    backend_name,
    describe_tray,
    load_backend,
)

REPO = Path(__file__).resolve().parents[2]
# A fresh interpreter importing pystray + GTK takes about 0.3 s here; 30 s covers a busy runner.
SUBPROCESS_TIMEOUT_S = 30.0
# Docking, opening a menu, running a callback: each well under a second here.
UI_TIMEOUT_S = 10.0
APPINDICATOR = LoadedBackend("appindicator", has_menu=True, has_menu_radio=True)
GTK = LoadedBackend("gtk", has_menu=True, has_menu_radio=True, has_default_action=True)

REPORT_SCRIPT = (
    "import dataclasses, json\n"
    "from desktop.tray.backend import check_tray\n"
    "report = check_tray()\n"
    "print(json.dumps({**dataclasses.asdict(report), 'ok': report.ok}))\n"
)


def report_in_subprocess(env: dict[str, str]) -> dict[str, Any]:
    """``check_tray()`` in a fresh interpreter with ``env``: pystray picks its backend there."""
    done = subprocess.run(
        [sys.executable, "-c", REPORT_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_backend_name_comes_from_the_icon_class_module() -> None:
    """The dummy Icon lives in ``pystray._base``; the others in a module named for them."""
    xorg_icon = type("Icon", (), {"__module__": "pystray._xorg"})
    assert backend_name(xorg_icon) == "xorg"
    loaded = load_backend()  # conftest set PYSTRAY_BACKEND=dummy for in-process imports
    assert loaded == LoadedBackend("dummy", has_menu=True, has_menu_radio=True, has_default_action=True)


def test_dummy_backend_is_reported_as_showing_no_icon(desktop: DesktopSession) -> None:
    """A stray PYSTRAY_BACKEND=dummy in someone's shell is named, not silently iconless."""
    report = describe_tray(load_backend(), desktop.env())
    assert report.problem is not None
    assert "PYSTRAY_BACKEND" in report.problem
    assert not report.expected


def test_real_desktop_gets_appindicator_with_a_menu_in_the_xembed_tray(desktop_env: dict[str, str]) -> None:
    """On a desktop with a tray, the app loads pystray's AppIndicator backend (menu, radio
    items) and finds the tray: no problem to report."""
    report = report_in_subprocess(desktop_env)
    assert report["backend"]["name"] == "appindicator", report
    assert report["backend"]["has_menu"] is True
    assert report["backend"]["has_menu_radio"] is True
    assert report["session"] == Session.X11
    assert report["xembed_tray"] is True
    assert report["status_notifier_watcher"] is False  # trayer is XEmbed only
    assert report["problem"] is None
    assert report["ok"] is True


def test_no_display_gives_the_headless_message_instead_of_a_crash(desktop: DesktopSession) -> None:
    """``import pystray`` raises with no DISPLAY; the check catches it and says to use serve."""
    env = desktop.env()
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    report = report_in_subprocess(env)
    assert report["backend"]["name"] is None
    assert "DisplayNameError" in report["backend"]["error"]
    assert report["session"] == Session.HEADLESS
    assert report["problem"].startswith("No desktop session")
    assert "trayproxy serve" in report["problem"]
    assert report["expected"] is True  # a server: serving without an icon is the plan, not a failure


def test_display_and_bus_without_a_tray_say_no_tray_host(bare_desktop: DesktopSession) -> None:
    """A desktop whose panel has no tray (nothing owns the XEmbed selection, no
    StatusNotifierWatcher on the bus) is told so, not left wondering where the icon went."""
    report = report_in_subprocess(bare_desktop.env())
    assert report["backend"]["name"] == "appindicator"
    assert report["xembed_tray"] is False
    assert report["status_notifier_watcher"] is False
    assert report["problem"].startswith("No tray to show the icon in")
    assert STATUS_NOTIFIER_WATCHER in report["problem"]
    assert report["expected"] is True


def test_gnome_without_a_tray_is_pointed_at_the_appindicator_extension(bare_desktop: DesktopSession) -> None:
    env = {**bare_desktop.env(), "XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}
    report = describe_tray(APPINDICATOR, env)
    assert report.problem is not None
    assert "AppIndicator and KStatusNotifierItem Support" in report.problem
    assert "gnome-shell-extension-appindicator" in report.problem
    assert report.expected


@pytest.fixture
def status_notifier_watcher(bare_desktop: DesktopSession) -> Iterator[None]:
    """A process owning org.kde.StatusNotifierWatcher on the bare desktop's bus."""
    owner = textwrap.dedent(f"""
        import sys
        from gi.repository import Gio, GLib
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                      "RequestName", GLib.Variant("(su)", ({STATUS_NOTIFIER_WATCHER!r}, 4)),
                      None, Gio.DBusCallFlags.NONE, -1, None)
        print("owned", flush=True)
        sys.stdin.read()
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", owner],
        env=bare_desktop.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "owned"
        yield
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.usefixtures("status_notifier_watcher")
def test_status_notifier_watcher_counts_as_a_tray_for_appindicator_only(bare_desktop: DesktopSession) -> None:
    """KDE and GNOME-with-extension trays are StatusNotifier hosts: AppIndicator shows its icon
    there; pystray's gtk backend (XEmbed only) would not, and is told so."""
    env = bare_desktop.env()
    report = describe_tray(APPINDICATOR, env)
    assert report.status_notifier_watcher is True
    assert report.xembed_tray is False
    assert report.ok
    assert describe_tray(GTK, env).problem is not None


def test_python_without_pygobject_falls_back_to_menuless_xorg_and_names_the_packages(
    desktop_env: dict[str, str], tmp_path: Path
) -> None:
    """Without PyGObject pystray quietly docks a menu-less icon; the check says so and lists
    what to install on Debian/Ubuntu and Fedora, and what to do in a virtualenv."""
    hide = tmp_path / "no-gi"
    hide.mkdir()
    (hide / "gi.py").write_text("raise ImportError('PyGObject hidden for this test')\n")
    report = report_in_subprocess({**desktop_env, "PYTHONPATH": str(hide)})
    assert report["backend"]["name"] == "xorg"
    assert report["backend"]["has_menu"] is False
    problem = report["problem"]
    assert "no menu" in problem
    assert "PyGObject (gi) is not importable" in problem
    for hint in ("gir1.2-ayatanaappindicator3-0.1", "python3-gi", "python3-gobject", "pip install PyGObject"):
        assert hint in problem


def test_missing_session_bus_is_named(desktop: DesktopSession, tmp_path: Path) -> None:
    """The GTK backends fail to start without a session bus; say that rather than crash later."""
    no_bus = {"DISPLAY": desktop.display, "XDG_RUNTIME_DIR": str(tmp_path)}
    dead_bus = {**no_bus, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path / 'gone'}"}
    for env in (no_bus, dead_bus):
        report = describe_tray(APPINDICATOR, env)
        assert report.bus_address is None
        assert report.problem is not None
        assert "No D-Bus session bus" in report.problem
        assert not report.expected  # a desktop session without its bus: something is broken


def test_display_that_does_not_answer_is_named(tmp_path: Path) -> None:
    report = describe_tray(APPINDICATOR, {"DISPLAY": ":65000", "XDG_RUNTIME_DIR": str(tmp_path)})
    assert report.problem is not None
    assert "does not answer" in report.problem
    assert not report.expected


def test_bus_probe_raises_connection_error_where_no_bus_listens(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError):
        has_bus_name(f"unix:path={tmp_path / 'nobody'}", STATUS_NOTIFIER_WATCHER)
    with pytest.raises(ConnectionError):
        has_bus_name("tcp:host=127.0.0.1,port=1", STATUS_NOTIFIER_WATCHER)


# A minimal pystray app: the icon TrayProxy draws, a two-item menu, one line per event.
TINY_APP = """
import sys
import pystray
from desktop.tray.backend import load_backend
from desktop.tray.icons import draw_icon

events = open(sys.argv[1], "a", buffering=1)

def on_hello(icon, item):
    events.write("clicked=hello\\n")

def on_quit(icon, item):
    events.write("clicked=quit\\n")
    icon.stop()

def setup(icon):
    icon.visible = True
    events.write(f"backend={load_backend().name}\\nready\\n")

menu = pystray.Menu(pystray.MenuItem("Say hello", on_hello), pystray.MenuItem("Quit", on_quit))
pystray.Icon("trayproxy-test", draw_icon("running", 64), "TrayProxy test", menu=menu).run(setup=setup)
"""


@pytest.fixture
def tiny_app(desktop_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The tiny app running inside the desktop; always stopped afterwards (a pystray app whose
    start-up failed hangs instead of exiting)."""
    events, log = tmp_path / "events", tmp_path / "app.log"
    events.touch()
    env = {**desktop_env, "TMPDIR": str(tmp_path)}  # pystray's icon file lands here, not in /tmp
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", TINY_APP, str(events)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "ready" in events.read_text() or process.poll() is not None,
            UI_TIMEOUT_S,
            "the app's setup",
        )
        assert process.poll() is None, "the app exited early:\n" + log.read_text()
        yield process, events
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(UI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_real_icon_docks_and_its_menu_runs_callbacks(
    tiny_app: tuple[subprocess.Popen[bytes], Path], x: XDriver, tmp_path: Path
) -> None:
    """The whole path a user takes: the icon appears in the tray (drawn by our icons module),
    a right click opens its menu, choosing an item runs its callback and closes the menu, and
    Quit ends the app cleanly."""
    process, events = tiny_app
    assert "backend=appindicator" in events.read_text().splitlines()

    icons = wait_until(x.docked_icons, UI_TIMEOUT_S, "the icon to dock")
    assert [icon.name for icon in icons] == ["TrayProxy test"]
    from PIL import Image

    def blue_pixels() -> int:
        x.screenshot(tmp_path / "icon.png", icons[0])
        with Image.open(tmp_path / "icon.png") as image:
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
        return sum(count for count, (r, g, b) in colours if b > 150 and r < 100)

    # The tray maps the icon's window before the icon paints it: a screenshot taken at once may
    # be empty (an 88-byte PNG, seen once in a CI run), so wait for the paint.
    wait_until(blue_pixels, UI_TIMEOUT_S, "the docked icon to show the running icon's blue")

    x.click(icons[0], button=3)
    wait_until(x.popup_menus, UI_TIMEOUT_S, "the menu to open")
    x.choose_menu_item(0)
    wait_until(lambda: "clicked=hello" in events.read_text(), UI_TIMEOUT_S, "the 'Say hello' callback")
    wait_until(lambda: not x.popup_menus(), UI_TIMEOUT_S, "the menu to close")

    x.click(icons[0], button=3)
    wait_until(x.popup_menus, UI_TIMEOUT_S, "the menu to open again")
    x.choose_menu_item(1)
    assert process.wait(UI_TIMEOUT_S) == 0
    assert events.read_text().splitlines()[-2:] == ["clicked=hello", "clicked=quit"]
    wait_until(lambda: not x.docked_icons(), UI_TIMEOUT_S, "the icon to leave the tray")


def test_xorg_chosen_by_pystray_backend_variable_says_to_unset_it(desktop_env: dict[str, str]) -> None:
    """A leftover PYSTRAY_BACKEND=xorg is the cause, not missing packages: say that instead."""
    report = report_in_subprocess({**desktop_env, "PYSTRAY_BACKEND": "xorg"})
    assert report["backend"]["name"] == "xorg"
    assert "Unset PYSTRAY_BACKEND" in report["problem"]
    assert "apt install" not in report["problem"]
