"""Ask an X display whether an XEmbed system tray is running on it.

The one job: ``has_xembed_tray(display)``. A system tray announces itself by owning the X
selection ``_NET_SYSTEM_TRAY_S<screen>`` (freedesktop.org System Tray Protocol); the display is
passed in, so tests can point the probe at a private display, or at none.

X11 only (Linux and the BSDs): python-xlib, which pystray installs there, is imported inside the
function, so this module imports on every OS. Imports nothing from ``desktop``.
"""

from __future__ import annotations

import os
import re

__all__ = ["X11_SOCKET_DIR", "has_xembed_tray"]

# ":0", ":1.0", "unix:2": a display on this machine, reached through its unix socket.
_LOCAL_DISPLAY = re.compile(r"(?:unix)?:(\d+)(?:\.\d+)?")
X11_SOCKET_DIR = "/tmp/.X11-unix"  # where every X server on Linux/BSD puts its sockets


def has_xembed_tray(display: str) -> bool:
    """Whether an XEmbed system tray owns ``_NET_SYSTEM_TRAY_S<screen>`` on ``display``.

    Raises ``OSError`` when the display cannot be opened.
    """
    from Xlib import X
    from Xlib import display as xdisplay

    local = _LOCAL_DISPLAY.fullmatch(display)
    if local and not os.path.exists(f"{X11_SOCKET_DIR}/X{local.group(1)}"):
        # python-xlib would fall back to TCP on localhost, and leaks that socket when it fails.
        raise ConnectionError(f"no X server at display {display!r}")
    try:
        connection = xdisplay.Display(display)
    except Exception as exc:  # Xlib's DisplayError family is not an OSError
        raise ConnectionError(f"cannot open X display {display!r}: {exc}") from exc
    try:
        screen = connection.get_default_screen()
        atom = connection.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}")
        return bool(connection.get_selection_owner(atom) != X.NONE)
    finally:
        connection.close()
