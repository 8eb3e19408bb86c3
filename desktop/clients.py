"""Ready-to-paste lines that point the common SDKs at TrayProxy: pure text, no UI, no I/O.

One function makes them for the tray's *Copy environment* and for ``trayproxy env``, from the
addresses TrayProxy listens on (:class:`Endpoint`: the main port, then each target's own port).

Each SDK gets the address of the target made for it: the OpenAI SDKs (Python, Node) send their
key as ``Authorization: Bearer``, the Anthropic SDKs as ``x-api-key``, so each is pointed at the
first address whose target puts its key in that header, else at one whose target adds no key
(a local Ollama), else at the main port, unless the main port's target is made for another
API: with the first-run config (only port 8000, serving the openai target, which adds
``Authorization``) the Anthropic SDK would reach OpenAI, so it gets no lines but a comment
saying how to serve the anthropic target (``port = 8001`` in its table). With that port,
``OPENAI_BASE_URL`` is port 8000 and ``ANTHROPIC_BASE_URL`` port 8001.

Routes on the main port (:class:`RoutedTarget`) are addresses too. A target claiming a path
prefix is reached at the main port plus that prefix: an Anthropic-style target claiming
``/anthropic`` gives ``ANTHROPIC_BASE_URL=http://127.0.0.1:8000/anthropic``, an OpenAI-style one
claiming ``/openai`` gives ``OPENAI_BASE_URL=http://127.0.0.1:8000/openai/v1``. Such an address
comes after the main port and before the targets' own ports (one port for every tool), in file
order. A target claiming models is reached at the main port itself, but only by requests naming
one of them (a request without a model, ``GET /v1/models``, reaches the chosen target): it
serves an SDK only when it takes that SDK's key header and no address before it does. When
an SDK is pointed at the main port and some target claims models there, a comment says which
models go where, e.g. that both SDKs may use the main port since ``claude-*`` goes to the
Anthropic-style target and everything else to the chosen OpenAI-style one.

The OpenAI SDKs read ``OPENAI_BASE_URL`` and want the ``/v1`` base; some older tools read
``OPENAI_API_BASE`` instead. The Anthropic SDKs read ``ANTHROPIC_BASE_URL`` without ``/v1``
(they add it). When TrayProxy adds the key itself, SDKs that refuse to start without one get a
placeholder: the proxy replaces it with the real key on the way out. When the proxy asks for
its local access token (``[security] require_token``), the key variables carry that token
instead: the SDKs send it as their key, the proxy checks it and puts the real key in.

Imports nothing from ``desktop``: the tray and the CLI both use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "PLACEHOLDER_KEY",
    "SHELLS",
    "Endpoint",
    "RoutedTarget",
    "Shell",
    "environment_lines",
    "one_port_lines",
]

Shell = Literal["posix", "powershell", "fish", "cmd"]
SHELLS: tuple[Shell, ...] = ("posix", "powershell", "fish", "cmd")
# Sent by the SDK, replaced by the proxy; visibly not a real key.
PLACEHOLDER_KEY = "added-by-trayproxy"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address TrayProxy listens on, and how its target takes a key."""

    # The base URL tools use, e.g. ``http://127.0.0.1:8001``.
    url: str
    # Credential headers (lower-case) the target's entry sets, whether or not its key could be
    # read: ``x-api-key`` marks a target made for the Anthropic SDKs.
    key_headers: frozenset[str] = frozenset()
    # True when the proxy puts the target's key in now, so tools need only a placeholder.
    adds_key: bool = False
    # The name of the target served there, for the notes; "" when not known.
    target: str = ""


@dataclass(frozen=True, slots=True)
class RoutedTarget:
    """A target the main port also reaches: by a path prefix (``/anthropic``) or by the model a
    request names (``claude-*``), and how it takes a key (as :class:`Endpoint`)."""

    target: str
    prefixes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    key_headers: frozenset[str] = frozenset()
    adds_key: bool = False


@dataclass(frozen=True, slots=True)
class _Address:
    """An endpoint an SDK may be pointed at; ``models``: the globs that alone reach its target
    there (a model route), empty when every request does."""

    endpoint: Endpoint
    models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Sdk:
    name: str
    url_variables: tuple[str, ...]
    key_variable: str
    # The header the SDK sends its key in (lower-case).
    key_header: str
    # Credential headers (lower-case) that mark a target as made for another API than this
    # SDK's: the Anthropic SDKs speak only Anthropic's Messages API; the OpenAI ones also speak
    # to OpenAI-compatible services that take api-key (Azure) or x-goog-api-key (Gemini).
    foreign_headers: frozenset[str]
    # Appended to the base URL (the OpenAI SDKs want the /v1 base).
    url_suffix: str


_SDKS = (
    _Sdk(
        "OpenAI",
        ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
        "OPENAI_API_KEY",
        "authorization",
        frozenset({"x-api-key"}),
        "/v1",
    ),
    _Sdk(
        "Anthropic",
        ("ANTHROPIC_BASE_URL",),
        "ANTHROPIC_API_KEY",
        "x-api-key",
        frozenset({"authorization", "api-key", "x-goog-api-key"}),
        "",
    ),
)
# How the headers are written in config files and docs.
_HEADER_SPELLING = {"authorization": "Authorization"}
# The port suggested for a target made for a tool, when no port above the main one is in use.
_FIRST_OWN_PORT = 8001


def _addresses(endpoints: Sequence[Endpoint], routes: Sequence[RoutedTarget]) -> list[_Address]:
    """Where an SDK may be pointed, in the order tried: the main port, its prefixes, the own
    ports, then the main port once more for each target reached there by model."""
    main = endpoints[0]
    prefixed = [
        _Address(Endpoint(main.url.rstrip("/") + route.prefixes[0], route.key_headers, route.adds_key, route.target))
        for route in routes
        if route.prefixes
    ]
    by_model = [
        _Address(Endpoint(main.url, route.key_headers, route.adds_key, route.target), route.models)
        for route in routes
        # The chosen target's own models reach it as any other request does.
        if route.models and route.target != main.target
    ]
    return [_Address(main), *prefixed, *(_Address(endpoint) for endpoint in endpoints[1:]), *by_model]


def _address_for(sdk: _Sdk, addresses: Sequence[_Address]) -> _Address | None:
    """The first address whose target takes its key where ``sdk`` sends one, else the first
    whose target adds none, else the first (the main port); None when that one's target is
    made for another API (it adds another SDK's key header): the SDK would reach the wrong API.
    A model route counts only when its target takes the SDK's key header (only requests naming
    its models reach it), so it comes after any address whose target does."""

    def fit(address: _Address) -> int:
        headers = address.endpoint.key_headers
        if sdk.key_header in headers:
            return 0
        if address.models:
            return 3
        return 1 if not headers else 2

    best = min(addresses, key=fit)  # min keeps the first of equals
    if fit(best) == 2 and best.endpoint.key_headers & sdk.foreign_headers:
        return None
    return best


def environment_lines(
    endpoints: Sequence[Endpoint],
    *,
    shell: Shell,
    local_token: str | None = None,
    portless: Mapping[str, frozenset[str]] | None = None,
    routes: Sequence[RoutedTarget] = (),
) -> str:
    """The lines for ``shell``, one variable per line, ending with a newline; ``endpoints``
    start with the main port; ``local_token`` is the token the proxy asks for, None when it
    asks for none; ``portless``: the credential headers of each target served on no port,
    named in the note for an SDK that no port serves; ``routes``: the targets the main port
    reaches by prefix or by model, in file order. An SDK whose only choice is a target made for
    another API gets no lines, but a comment saying how to serve one made for it. Raises
    ValueError when ``endpoints`` is empty."""
    if not endpoints:
        raise ValueError("no address to point the SDKs at")
    addresses = _addresses(endpoints, routes)
    chosen: list[tuple[_Sdk, Endpoint]] = []
    on_main: list[_Sdk] = []
    notes: list[str] = []
    for sdk in _SDKS:
        address = _address_for(sdk, addresses)
        if address is None:
            notes.append(_unserved_note(sdk, endpoints, portless or {}))
            continue
        chosen.append((sdk, address.endpoint))
        if address.endpoint.url == endpoints[0].url:
            on_main.append(sdk)
    by_model = [address for address in addresses if address.models]
    if on_main and by_model:
        notes.append(_models_note(on_main, endpoints[0], by_model))
    return _lines(chosen, shell=shell, local_token=local_token, notes=notes)


def _models_note(on_main: Sequence[_Sdk], main: Endpoint, by_model: Sequence[_Address]) -> str:
    """Which models the main port sends where, for the SDKs pointed at it."""
    served = f"'{main.target}'" if main.target else "the chosen target"
    where = "; ".join(f"{', '.join(address.models)} go to '{address.endpoint.target}'" for address in by_model)
    who = "both SDKs may use the main port" if len(on_main) == len(_SDKS) else "on the main port"
    # Only a body of up to 1 MiB is read for its model (the proxy holds no more): a longer one
    # (a long context, images) goes where requests without a model go.
    return f"{who}: requests for models {where}; all others, and bodies over 1 MiB, to {served}"


def one_port_lines(endpoint: Endpoint, *, shell: Shell, local_token: str | None = None) -> str:
    """Lines pointing every SDK at ``endpoint``, whatever its target is made for: asked for
    by name (the tray's submenu of a target's own port)."""
    return _lines([(sdk, endpoint) for sdk in _SDKS], shell=shell, local_token=local_token, notes=[])


def _lines(chosen: Sequence[tuple[_Sdk, Endpoint]], *, shell: Shell, local_token: str | None, notes: list[str]) -> str:
    urls: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    for sdk, endpoint in chosen:
        base = endpoint.url.rstrip("/") + sdk.url_suffix
        urls += [(name, base) for name in sdk.url_variables]
        key = local_token or (PLACEHOLDER_KEY if endpoint.adds_key else None)
        if key is not None:
            keys.append((sdk.key_variable, key))
    if keys:
        # The key lines replace whatever key the shell had; said on stdout, where `eval` and a
        # paste keep it, as a comment the shell skips (warnings on stderr vanish in eval).
        what = "TrayProxy's local access token" if local_token else "a placeholder"
        notes = [
            f"{', '.join(name for name, _ in keys)} {'hold' if len(keys) > 1 else 'holds'} {what},"
            " for your tools: TrayProxy adds the real key on the way out and reads your real keys"
            " itself, so do not start it where these lines ran",
            *notes,
        ]
    return "".join(_comment(shell, note) for note in notes) + "".join(
        _assignment(shell, name, value) for name, value in urls + keys
    )


_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def _unserved_note(sdk: _Sdk, endpoints: Sequence[Endpoint], portless: Mapping[str, frozenset[str]]) -> str:
    """Why ``sdk`` gets no lines, and how to serve a target made for it."""
    main = endpoints[0]
    adds = ", ".join(sorted(_HEADER_SPELLING.get(name, name) for name in main.key_headers))
    served = f"'{main.target}'" if main.target else "its target"
    header = _HEADER_SPELLING.get(sdk.key_header, sdk.key_header)
    why = f"no {sdk.url_variables[0]} line: the main port serves {served}, which adds {adds}, not {header}"
    port = _free_port_above(endpoints)
    made_for = [name for name, headers in portless.items() if sdk.key_header in headers]
    if made_for:
        name = made_for[0]
        # A name that is one path segment makes a prefix as it is; another needs one chosen.
        prefix = f"/{name}" if _SEGMENT.fullmatch(name) else "/api"
        return (
            f'{why}; give \'{name}\' a prefix (prefix = "{prefix}" under [targets.{name}]),'
            f" a port of its own (port = {port}) or make it the main target (active = \"{name}\")"
        )
    return f"{why}; add a target for the {sdk.name} API whose headers set {header}, with port = {port}"


def _free_port_above(endpoints: Sequence[Endpoint]) -> int:
    """The port after the highest one TrayProxy listens on (8001 beside the default 8000)."""
    ports = [urlsplit(endpoint.url).port or 0 for endpoint in endpoints]
    return max(_FIRST_OWN_PORT, max(ports) + 1)


def _comment(shell: Shell, text: str) -> str:
    return f"REM {text}\n" if shell == "cmd" else f"# {text}\n"


def _assignment(shell: Shell, name: str, value: str) -> str:
    # Values are URLs, the placeholder or a token: no quotes, spaces or $ in any of them.
    if shell == "powershell":
        return f'$env:{name} = "{value}"\n'
    if shell == "fish":
        return f"set -gx {name} {value}\n"
    if shell == "cmd":
        return f"set {name}={value}\n"
    return f"export {name}={value}\n"
