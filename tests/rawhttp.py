"""Raw HTTP/1.1 over a socket, for tests whose claim is about the bytes on the wire.

``build_request`` writes exactly the bytes a test gives it (no header is added or fixed up) and
``exchange`` reads back one response, so malformed, ambiguous or oversized requests reach the
proxy as written and the answer is seen as sent, every header included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RawResponse", "build_request", "exchange"]

# Pause before ``exchange``'s ``later`` bytes: long enough for a server on this machine to have
# parsed the head and started on the request, even on a busy machine.
LATER_PAUSE_S = 0.3


@dataclass
class RawResponse:
    """One response as read off the socket."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    # Whatever the peer sent after this response before it closed (a second response, say).
    rest: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def header_names(self) -> set[str]:
        """Lower-cased names of every header in the response."""
        return {k.lower() for k, _ in self.headers}


def build_request(
    method: str = "GET",
    target: str = "/",
    *,
    headers: Iterable[tuple[str, str] | bytes] = (),
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """``METHOD target HTTP/version`` then each header as given; a bytes item is sent as the
    whole header line (for lines that are not ``Name: value``)."""
    lines = [f"{method} {target} HTTP/{version}".encode("latin-1")]
    for item in headers:
        if isinstance(item, bytes):
            lines.append(item)
        else:
            lines.append(f"{item[0]}: {item[1]}".encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(
    port: int,
    data: bytes,
    *,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
    read_rest: bool = False,
    later: bytes = b"",
) -> RawResponse:
    """Send ``data``, read one response (and, with ``read_rest``, everything until close).
    ``later`` is sent LATER_PAUSE_S after ``data``, once the server has acted on the head (a
    body that goes wrong part way); ``timeout`` counts from the last byte sent."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        if later:
            await asyncio.sleep(LATER_PAUSE_S)
            writer.write(later)
            await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = []
            for line in header_lines:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
            response = RawResponse(status=status, headers=headers, body=b"", raw=head)
            length = response.header("Content-Length")
            if length is not None:
                response.body = await reader.readexactly(int(length))
            else:
                response.body = await reader.read()
            response.raw += response.body
            if read_rest:
                with contextlib.suppress(ConnectionResetError):
                    response.rest = await reader.read()
        return response
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
