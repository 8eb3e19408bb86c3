"""Test a target: one cheap authenticated request through the proxy's own upstream settings.

The answer is one line a person can act on: reachable or not (DNS, refused, TLS, timeout, with
the engine's own wording), key accepted or rejected (401/403), rate limited (429), and how
long it took. The request is ``GET <target>/v1/models`` (the model list every OpenAI-style API
and Anthropic's have; Ollama and vLLM serve it too), sent with the target's headers. Azure
OpenAI has no ``/v1``: its list is ``/openai/models?api-version=...`` on the resource's host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from desktop.config.model import Target
from desktop.engine.errors import map_client_error
from desktop.engine.upstream import Upstream

__all__ = ["PROBE_PATH", "ProbeResult", "probe_path", "probe_target"]

PROBE_PATH = "/v1/models"
# Anthropic's API refuses a request without a version; others ignore the header.
PROBE_HEADERS = {"anthropic-version": "2023-06-01"}
# Azure OpenAI resources (classic and AI Foundry hosts) and the API version their model list
# accepts (a GA version; Azure answers 404 to a request without one).
AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com")
AZURE_PROBE_QUERY = "?api-version=2024-10-21"


def probe_path(target: Target, base_path: str) -> str:
    """The model-list path to request under the target's base path."""
    host = (urlsplit(target.url).hostname or "").lower()
    if host.endswith(AZURE_HOST_SUFFIXES):
        prefix = "" if base_path.endswith("/openai") else "/openai"
        return f"{prefix}/models{AZURE_PROBE_QUERY}"
    return PROBE_PATH.removeprefix("/v1") if base_path.endswith("/v1") else PROBE_PATH


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What testing a target found."""

    ok: bool
    summary: str
    status: int | None = None
    latency_ms: float | None = None
    # Why the request carried no key of the target's; None when it carried one.
    no_key: str | None = None

    def line(self, name: str) -> str:
        took = f", {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        status = f"HTTP {self.status}" if self.status is not None else ""
        detail = ", ".join(part for part in (status, took.lstrip(", ")) if part)
        unkeyed = f"; no key sent: {self.no_key}" if self.no_key else ""
        return f"{name}: {self.summary}" + (f" ({detail})" if detail else "") + unkeyed


def _verdict(status: int, *, key_sent: bool) -> tuple[bool, str]:
    if 200 <= status < 300:
        # Without a key, a 200 says nothing about any key (a local server that needs none).
        return True, "reachable, key accepted" if key_sent else "reachable"
    if status in (401, 403):
        return False, "reachable, but the key was rejected" if key_sent else "reachable, but it asks for a key"
    if status == 429:
        return False, "reachable, but rate limited"
    if status == 404:
        return True, "reachable (it has no model list here)"
    return False, "reachable, but it answered with an error"


async def probe_target(
    target: Target, *, resolver: AbstractResolver | None = None, no_key: str | None = None
) -> ProbeResult:
    """Send the probe request to ``target`` and say what happened; ``no_key``: why its headers
    carry no key (the caller knows the config), so the answer does not credit one."""
    upstream = Upstream(target, resolver=resolver)
    path = probe_path(target, upstream.base_path)
    headers = upstream.rules.apply((), client_ip="127.0.0.1")
    for name, value in PROBE_HEADERS.items():
        headers.setdefault(name, value)
    started = time.perf_counter()
    try:
        response = await upstream.request(
            "GET",
            upstream.url_for(path),
            headers=headers,
            allow_redirects=False,
            proxy=upstream.proxy,
            proxy_headers=upstream.proxy_headers,
        )
        async with response:
            await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        return ProbeResult(
            False, "not reachable: " + map_client_error(exc, target=upstream.label).message, no_key=no_key
        )
    finally:
        await upstream.close()
    ok, summary = _verdict(status, key_sent=no_key is None)
    return ProbeResult(ok, summary, status, (time.perf_counter() - started) * 1000, no_key)
