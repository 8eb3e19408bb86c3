"""Loopback doubles for the upstream side of the proxy: TLS material, resolvers, a raw
keep-alive server that can drop pooled connections, and forward proxies.

Everything listens on 127.0.0.1 and nothing leaves the machine: host names are answered by a
resolver handed to the proxy's connector instead of DNS, and the "forward proxies" only ever
connect back to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "ConnectTunnel",
    "FailingResolver",
    "Hit",
    "KeepAliveServer",
    "LocalCA",
    "LoopbackResolver",
]


@dataclass
class LocalCA:
    """A throwaway certificate authority and a server certificate it issued."""

    ca: trustme.CA
    cert: trustme.LeafCert
    ca_path: Path
    # Server names clients asked for in their TLS ClientHello (SNI), in order.
    sni: list[str | None] = field(default_factory=list)

    @classmethod
    def issue(cls, directory: Path, *names: str) -> LocalCA:
        ca = trustme.CA()
        cert = ca.issue_cert(*names)
        ca_path = directory / "test-ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        return cls(ca=ca, cert=cert, ca_path=ca_path)

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate and recording SNI."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)

        def record(_sslobj: object, name: str | None, _context: ssl.SSLContext) -> None:
            self.sni.append(name)

        context.sni_callback = record
        return context


class LoopbackResolver(AbstractResolver):
    """Answers every host name with 127.0.0.1 and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


class FailingResolver(AbstractResolver):
    """A resolver that fails every lookup the way the system resolver does, with no query sent."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        raise self.error

    async def close(self) -> None:
        return None


class _RawLoopbackServer:
    """A raw asyncio server on 127.0.0.1; subclasses write ``_serve`` and track writers."""

    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter]
    port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class Hit:
    """One request as a :class:`KeepAliveServer` saw it."""

    connection: int  # 1 for the server's first accepted connection, and so on
    nth: int  # 1 for the first request on that connection
    method: str
    target: str
    headers: dict[str, str]
    body: bytes | None  # None when the request was dropped before its body was read
    answered: bool


class KeepAliveServer(_RawLoopbackServer):
    """A raw HTTP/1.1 server that answers with keep-alive and can drop connections on cue.

    ``mode`` decides what happens to the next request:

    - ``"answer"``: answer it (a JSON record of the connection, request and body);
    - ``"drop_reused"``: if it arrives on a connection that already served a request, close
      that connection without answering (what a client sees when the server's idle timeout,
      a sleep or a network change killed a pooled connection); on a new connection, answer;
    - ``"drop_all"``: close the connection without answering, whatever it is.

    With ``close_after_answer`` the connection is closed right after each answer, without a
    ``Connection: close`` header (a server that drops idle connections early). ``how`` is
    ``"close"`` (FIN) or ``"reset"`` (RST, SO_LINGER 0). With ``answer_after`` set,
    answers wait until that many requests have arrived, so concurrent requests are held open
    on separate connections.
    """

    def __init__(self) -> None:
        self.mode = "answer"
        self.how = "close"
        self.answer_after = 0
        self.close_after_answer = False
        self.hits: list[Hit] = []
        self.connections = 0
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        self._writers.add(writer)
        try:
            nth = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                nth += 1
                request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                hit = Hit(connection, nth, method, target, headers, body=None, answered=False)
                self.hits.append(hit)
                async with self._arrived:
                    self._arrived.notify_all()
                if self.mode == "drop_all" or (self.mode == "drop_reused" and nth > 1):
                    self._drop(writer)
                    return
                hit.body = await _read_body(reader, headers)
                if self.answer_after:
                    async with self._arrived:
                        await self._arrived.wait_for(lambda: len(self.hits) >= self.answer_after)
                payload = json.dumps(
                    {"connection": connection, "nth": nth, "body": hit.body.decode("latin-1")}
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
                hit.answered = True
                if self.close_after_answer:
                    # Gone without a word: no "Connection: close" was sent.
                    writer.close()
                    return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        if self.how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return b""


class ConnectTunnel(_RawLoopbackServer):
    """An HTTPS_PROXY double: accepts ``CONNECT host:port``, records it, and tunnels the
    bytes to 127.0.0.1 at that port (never anywhere else)."""

    def __init__(self) -> None:
        self.connects: list[dict[str, str]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def close(self) -> None:
        await super().close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
            method, authority, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            self.connects.append({"method": method, "authority": authority, **headers})
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            port = int(authority.rsplit(":", 1)[1])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            self._writers.add(up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._writers.discard(writer)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()
