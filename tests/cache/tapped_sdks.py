"""The openai and anthropic SDKs as a tool uses them against TrayProxy, with every answer's
body kept as the pieces that came off the connection, before any decoding: what the bytes and
chunk boundaries were, not only what the SDK made of them.

Each SDK brings its own HTTP package (httpx, or its successor in newer releases) and accepts
only that package's client, so the tap is built from the classes of the package the SDK's own
client class comes from.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import anthropic
import openai

__all__ = ["Tapped", "TappedAnswer", "anthropic_client", "openai_client"]

# What a tool sends as its key when TrayProxy adds the real one (or none is needed).
PLACEHOLDER = "added-by-trayproxy"
TIMEOUT_S = 20.0


@dataclass
class TappedAnswer:
    """One answer as it came: status, headers, and the body's pieces before decoding; with
    the request the SDK sent for it."""

    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int
    headers: list[tuple[str, str]]
    pieces: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class Tapped:
    """What the SDK's HTTP client received, answer by answer."""

    answers: list[TappedAnswer] = field(default_factory=list)

    @property
    def last(self) -> TappedAnswer:
        return self.answers[-1]


def _http_package(sdk: ModuleType) -> Any:
    """The HTTP package the SDK's own async client class is built on."""
    client_class = next(c for c in sdk.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
    return importlib.import_module(client_class.__module__.partition(".")[0])


def _tapping_client(sdk: ModuleType, tapped: Tapped) -> Any:
    """The SDK's default async client over a transport that keeps every answer's raw pieces."""
    http = _http_package(sdk)

    class TappedStream(http.AsyncByteStream):  # type: ignore[name-defined]
        def __init__(self, inner: Any, answer: TappedAnswer) -> None:
            self._inner, self._answer = inner, answer

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for piece in self._inner:
                self._answer.pieces.append(bytes(piece))
                yield piece

        async def aclose(self) -> None:
            await self._inner.aclose()

    class TappingTransport(http.AsyncBaseTransport):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = http.AsyncHTTPTransport()

        async def handle_async_request(self, request: Any) -> Any:
            response = await self._inner.handle_async_request(request)
            answer = TappedAnswer(
                list(request.headers.multi_items()),
                bytes(request.content),
                response.status_code,
                list(response.headers.multi_items()),
            )
            tapped.answers.append(answer)
            return http.Response(
                status_code=response.status_code,
                headers=response.headers,
                stream=TappedStream(response.stream, answer),
                extensions=response.extensions,
            )

        async def aclose(self) -> None:
            await self._inner.aclose()

    return sdk.DefaultAsyncHttpxClient(transport=TappingTransport(), trust_env=False)


@asynccontextmanager
async def openai_client(base_url: str) -> AsyncIterator[tuple[openai.AsyncOpenAI, Tapped]]:
    """``AsyncOpenAI`` at ``base_url`` (TrayProxy's ``/v1``), no retries of its own."""
    tapped = Tapped()
    async with (
        _tapping_client(openai, tapped) as http,
        openai.AsyncOpenAI(
            base_url=base_url, api_key=PLACEHOLDER, http_client=http, max_retries=0, timeout=TIMEOUT_S
        ) as client,
    ):
        yield client, tapped


@asynccontextmanager
async def anthropic_client(base_url: str) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, Tapped]]:
    """``AsyncAnthropic`` at ``base_url``, no retries of its own."""
    tapped = Tapped()
    async with (
        _tapping_client(anthropic, tapped) as http,
        anthropic.AsyncAnthropic(
            base_url=base_url, api_key=PLACEHOLDER, http_client=http, max_retries=0, timeout=TIMEOUT_S
        ) as client,
    ):
        yield client, tapped
