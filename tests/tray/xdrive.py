"""Drive an X display the way a person would: find tray icons and menus, click, type, look.

Talks X11 directly through python-xlib (installed with pystray on Linux): the window tree for
"what is on screen", the XTEST extension for pointer and keys (the server treats them as real
input, so GTK's menu grabs see them), Pillow's ``ImageGrab`` for screenshots. No xdotool.

Works with the ``trayer`` panel of ``desktop_session``: its window has the WM_CLASS instance
``panel``; each docked icon is a socket window inside it holding the app's embedded window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

try:
    from Xlib import XK, X
    from Xlib import display as xdisplay
    from Xlib import error as xerror
    from Xlib.ext import xtest
except ImportError:  # python-xlib is a Linux-only dependency; the hosted Windows and macOS jobs
    pass  # import this module with the frozen smoke tests but never drive an X display

T = TypeVar("T")

# Often enough that a test waits little past the event it waits for, rarely enough that the
# polling itself (a few X round trips) costs nothing measurable.
POLL_INTERVAL_S = 0.05
PANEL_CLASS = "panel"  # trayer's WM_CLASS instance name
POPUP_MENU_TYPE = "_NET_WM_WINDOW_TYPE_POPUP_MENU"  # EWMH: what GTK sets on a menu window


def wait_until(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; else TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


@dataclass(frozen=True)
class Win:
    """A window on screen: id, title, class and its rectangle in screen coordinates."""

    id: int
    name: str
    wm_class: str
    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.width, self.y + self.height


class XDriver:
    """One X connection to ``display`` and what a test does through it."""

    def __init__(self, display: str, connection: Any) -> None:
        self.display = display
        self._x = connection
        self._root = connection.screen().root

    @classmethod
    def connect(cls, display: str) -> XDriver:
        """Open ``display``; ``ConnectionError`` if no X server answers there."""
        try:
            return cls(display, xdisplay.Display(display))
        except Exception as exc:  # Xlib's DisplayError family is not an OSError
            raise ConnectionError(f"cannot open X display {display}: {exc}") from exc

    def close(self) -> None:
        self._x.close()

    # What is on screen.

    def _win(self, window: Any, name_from: Any = None) -> Win | None:
        """Describe a mapped window (None if unmapped or already gone)."""
        try:
            if window.get_attributes().map_state != X.IsViewable:
                return None
            geometry = window.get_geometry()
            origin = self._root.translate_coords(window, 0, 0)
            labelled = name_from if name_from is not None else window
            name = self._name(labelled)
            wm_class = labelled.get_wm_class() or ("", "")
        except xerror.XError:
            return None
        return Win(window.id, name, wm_class[0], origin.x, origin.y, geometry.width, geometry.height)

    def _name(self, window: Any) -> str:
        """The window's title: EWMH ``_NET_WM_NAME`` (UTF-8) first, since GTK writes a title
        with characters outside Latin-1 (the status line's "→") to ``WM_NAME`` as
        COMPOUND_TEXT, which python-xlib's ``get_wm_name`` returns as an empty string."""
        utf8 = self._x.intern_atom("UTF8_STRING")
        prop = window.get_full_property(self._x.intern_atom("_NET_WM_NAME"), utf8)
        if prop is not None and prop.value:
            value = prop.value
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name() or ""
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)

    def _top_level(self) -> list[Any]:
        return list(self._root.query_tree().children)

    def panels(self) -> list[Win]:
        """Visible trayer panels."""
        found = []
        for window in self._top_level():
            try:
                wm_class = window.get_wm_class()
            except xerror.XError:
                continue
            if wm_class and wm_class[0] == PANEL_CLASS:
                win = self._win(window)
                if win is not None:
                    found.append(win)
        return found

    def docked_icons(self) -> list[Win]:
        """Icons docked in the panel, in panel order; each named after the app's embedded
        window (pystray's appindicator backend: the icon's title)."""
        icons = []
        for panel in self.panels():
            try:
                sockets = self._x.create_resource_object("window", panel.id).query_tree().children
            except xerror.XError:
                continue
            for socket in sockets:
                try:
                    plugs = socket.query_tree().children
                except xerror.XError:
                    continue
                win = self._win(socket, name_from=plugs[0] if plugs else None)
                if win is not None and win.width > 1 and win.height > 1:
                    icons.append(win)
        return sorted(icons, key=lambda w: (w.y, w.x))

    def popup_menus(self) -> list[Win]:
        """Visible popup-menu windows, such as a tray icon's menu once opened."""
        window_type = self._x.intern_atom("_NET_WM_WINDOW_TYPE")
        popup = self._x.intern_atom(POPUP_MENU_TYPE)
        menus = []
        for window in self._top_level():
            try:
                prop = window.get_full_property(window_type, X.AnyPropertyType)
            except xerror.XError:
                continue
            if prop is not None and popup in prop.value:
                win = self._win(window)
                if win is not None:
                    menus.append(win)
        return menus

    # Input, through XTEST.

    def _sync(self) -> None:
        self._x.sync()

    def click(self, win: Win, button: int = 3) -> None:
        """Move the pointer to the middle of ``win`` and click ``button`` (1 left, 3 right:
        the right click opens a tray menu on every Linux backend)."""
        x, y = win.centre
        xtest.fake_input(self._x, X.MotionNotify, x=x, y=y)
        self._sync()
        xtest.fake_input(self._x, X.ButtonPress, button)
        self._sync()
        xtest.fake_input(self._x, X.ButtonRelease, button)
        self._sync()

    def press(self, *keys: str) -> None:
        """Press and release each key in turn, by X keysym name (``Down``, ``Return``)."""
        for key in keys:
            keycode = self._x.keysym_to_keycode(XK.string_to_keysym(key))
            if not keycode:
                raise ValueError(f"no key {key!r} on this keyboard")
            xtest.fake_input(self._x, X.KeyPress, keycode)
            xtest.fake_input(self._x, X.KeyRelease, keycode)
            self._sync()

    def choose_menu_item(self, index: int) -> None:
        """Activate item ``index`` (0 = first) of the open menu with the keyboard: GTK skips
        separators and disabled items, and keys do not depend on the theme's item height."""
        self.press(*(["Down"] * (index + 1)), "Return")

    # Looking.

    def screenshot(self, path: Path, win: Win | None = None) -> Path:
        """Save the screen, or the area of ``win``, as a PNG."""
        from PIL import ImageGrab

        ImageGrab.grab(bbox=win.bbox if win else None, xdisplay=self.display).save(path)
        return path
