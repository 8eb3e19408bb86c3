"""Ask a D-Bus bus whether a name has an owner, without a D-Bus library.

The one job: ``has_bus_name(address, name)``, a ``NameHasOwner`` call on the bus daemon at
``address`` (``session_bus_address`` finds the session bus from an environment passed in), so
tests can point it at a private bus, or at nothing at all. The tray asks it whether a
StatusNotifierWatcher is running; the tests wait with it for a bus service to appear.

The bus is spoken to directly, a dozen bytes of D-Bus over its unix socket, instead of through
PyGObject's ``Gio.DBusConnection``: the tray needs the answer most exactly when PyGObject is
missing (pystray then falls back to its menu-less xorg backend); ``new_for_address_sync`` takes
no timeout, only a cancellable, so a socket that accepts and never answers holds it (still
waiting after 6 s, where this gives up after ``REPLY_TIMEOUT_S``); and a Gio connection starts
GLib threads that outlive it (two more after ``close_sync``).

Linux and the BSDs only: on Windows ``has_bus_name`` raises ``ConnectionError``. Imports nothing
from ``desktop``; standard library only.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from urllib.parse import unquote

__all__ = ["REPLY_TIMEOUT_S", "has_bus_name", "session_bus_address"]

# A bus on this machine answers in milliseconds; the bound only stops a wedged one from
# freezing the caller.
REPLY_TIMEOUT_S = 2.0


def session_bus_address(env: Mapping[str, str]) -> str | None:
    """The session bus address from ``env``, else the usual ``$XDG_RUNTIME_DIR/bus`` socket."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


def _socket_paths(address: str, env: Mapping[str, str]) -> list[str]:
    """Unix socket paths in a D-Bus address (``;``-separated, values %-escaped); abstract
    sockets start with NUL. TCP and other transports are skipped: sessions use unix sockets."""
    paths = []
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        keys = dict(p.partition("=")[::2] for p in params.split(",") if p)
        if "path" in keys:
            paths.append(unquote(keys["path"]))
        elif "abstract" in keys:
            paths.append("\0" + unquote(keys["abstract"]))
        elif keys.get("runtime") == "yes" and env.get("XDG_RUNTIME_DIR"):
            paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "bus"))
    return paths


class _Marshal:
    """Little-endian D-Bus marshalling of the few types a NameHasOwner call needs."""

    def __init__(self) -> None:
        self.data = bytearray()

    def pad(self, alignment: int) -> None:
        self.data += b"\0" * (-len(self.data) % alignment)

    def byte(self, value: int) -> None:
        self.data.append(value)

    def uint32(self, value: int) -> None:
        self.pad(4)
        self.data += struct.pack("<I", value)

    def string(self, value: str) -> None:  # also object paths
        raw = value.encode()
        self.uint32(len(raw))
        self.data += raw + b"\0"

    def signature(self, value: str) -> None:
        self.byte(len(value))
        self.data += value.encode() + b"\0"


# Header field codes and message types (D-Bus specification, "Message Format").
_FIELD_PATH, _FIELD_INTERFACE, _FIELD_MEMBER, _FIELD_ERROR_NAME, _FIELD_REPLY_SERIAL = 1, 2, 3, 4, 5
_FIELD_DESTINATION, _FIELD_SIGNATURE = 6, 8
_METHOD_CALL, _METHOD_RETURN, _ERROR = 1, 2, 3
_BUS = "org.freedesktop.DBus"


def _bus_call(serial: int, member: str, arg: str | None = None) -> bytes:
    """A method call on the bus daemon itself, with at most one string argument."""
    body = _Marshal()
    if arg is not None:
        body.string(arg)
    fields: list[tuple[int, str, str]] = [
        (_FIELD_PATH, "o", "/org/freedesktop/DBus"),
        (_FIELD_INTERFACE, "s", _BUS),
        (_FIELD_MEMBER, "s", member),
        (_FIELD_DESTINATION, "s", _BUS),
    ]
    if arg is not None:
        fields.append((_FIELD_SIGNATURE, "g", "s"))
    message = _Marshal()
    message.data += b"l" + bytes([_METHOD_CALL, 0, 1])  # little-endian, no flags, protocol 1
    message.uint32(len(body.data))
    message.uint32(serial)
    message.uint32(0)  # header field array length, filled in below
    message.pad(8)
    fields_start = len(message.data)
    for code, kind, value in fields:
        message.pad(8)
        message.byte(code)
        message.signature(kind)
        message.signature(value) if kind == "g" else message.string(value)
    struct.pack_into("<I", message.data, 12, len(message.data) - fields_start)
    message.pad(8)
    return bytes(message.data + body.data)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the bus closed the connection")
        data += chunk
    return data


def _read_reply(sock: socket.socket, serial: int, deadline: float) -> tuple[int, bytes, str]:
    """Skip signals until the reply to ``serial``; return (type, body, endianness)."""
    while time.monotonic() < deadline:
        fixed = _recv_exactly(sock, 16)
        order = "<" if fixed[:1] == b"l" else ">"
        kind = fixed[1]
        body_len, _, fields_len = struct.unpack(order + "III", fixed[4:16])
        header_rest = _recv_exactly(sock, fields_len + (-(16 + fields_len) % 8))
        body = _recv_exactly(sock, body_len)
        header = fixed + header_rest
        pos, reply_to = 16, None
        while pos < 16 + fields_len:
            pos += -pos % 8
            code, sig_len = header[pos], header[pos + 1]
            sig = header[pos + 2 : pos + 2 + sig_len].decode()
            pos += 3 + sig_len
            if sig == "u":
                pos += -pos % 4
                (value,) = struct.unpack(order + "I", header[pos : pos + 4])
                reply_to = value if code == _FIELD_REPLY_SERIAL else reply_to
                pos += 4
            elif sig in ("s", "o"):
                pos += -pos % 4
                (length,) = struct.unpack(order + "I", header[pos : pos + 4])
                pos += 4 + length + 1
            elif sig == "g":
                pos += 1 + header[pos] + 1
            else:
                raise ConnectionError(f"unexpected header field type {sig!r}")
        if reply_to == serial and kind in (_METHOD_RETURN, _ERROR):
            return kind, body, order
    raise TimeoutError("no reply from the bus")


def has_bus_name(
    address: str, name: str, *, env: Mapping[str, str] | None = None, timeout_s: float = REPLY_TIMEOUT_S
) -> bool:
    """Whether ``name`` has an owner on the bus at ``address``.

    Raises ``ConnectionError`` when no bus answers there (in ``timeout_s``).
    """
    if sys.platform == "win32":  # no AF_UNIX, no uid to authenticate with
        raise ConnectionError("no D-Bus session bus on Windows")
    paths = _socket_paths(address, os.environ if env is None else env)
    if not paths:
        raise ConnectionError("no unix socket in the bus address")
    deadline = time.monotonic() + timeout_s
    last_error: OSError = ConnectionError("no unix socket in the bus address")
    for path in paths:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s)
                sock.connect(path)
                # SASL EXTERNAL: the server checks our uid from the socket credentials.
                sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
                answer = b""
                while not answer.endswith(b"\r\n"):
                    answer += _recv_exactly(sock, 1)
                if not answer.startswith(b"OK "):
                    raise ConnectionError("the bus refused authentication")
                # Hello must come first on a bus connection; NameHasOwner is serial 2.
                sock.sendall(b"BEGIN\r\n" + _bus_call(1, "Hello") + _bus_call(2, "NameHasOwner", name))
                kind, body, order = _read_reply(sock, 2, deadline)
                if kind == _ERROR:
                    raise ConnectionError("the bus answered NameHasOwner with an error")
                (has_owner,) = struct.unpack(order + "I", body[:4])
                return bool(has_owner == 1)
        except OSError as exc:
            last_error = exc
    raise ConnectionError(f"no bus answers at {address}: {last_error}") from last_error
