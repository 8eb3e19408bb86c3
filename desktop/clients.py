"""Ready-to-paste lines that point the common SDKs at TrayProxy: pure text, no UI, no I/O.

One function makes them for the tray's *Copy environment* and for ``trayproxy env``, from the
addresses TrayProxy listens on (:class:`Endpoint`: the main port, then each target's own port).

Each SDK gets the address of the target made for it: the OpenAI SDKs (Python, Node) send their
key as ``Authorization: Bearer``, the Anthropic SDKs as ``x-api-key``, so each is pointed at the
first address whose target puts its key in that header, else at one whose target adds no key
(a local Ollama), else at the main port. With the default config and ``port = 8001`` on the
anthropic target, ``OPENAI_BASE_URL`` is port 8000 and ``ANTHROPIC_BASE_URL`` port 8001.

The OpenAI SDKs read ``OPENAI_BASE_URL`` and want the ``/v1`` base; some older tools read
``OPENAI_API_BASE`` instead. The Anthropic SDKs read ``ANTHROPIC_BASE_URL`` without ``/v1``
(they add it). When TrayProxy adds the key itself, SDKs that refuse to start without one get a
placeholder: the proxy replaces it with the real key on the way out. When the proxy asks for
its local access token (``[security] require_token``), the key variables carry that token
instead: the SDKs send it as their key, the proxy checks it and puts the real key in.

Imports nothing from ``desktop``: the tray and the CLI both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["PLACEHOLDER_KEY", "SHELLS", "Endpoint", "Shell", "environment_lines"]

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


@dataclass(frozen=True, slots=True)
class _Sdk:
    url_variables: tuple[str, ...]
    key_variable: str
    # The header the SDK sends its key in (lower-case).
    key_header: str
    # Appended to the base URL (the OpenAI SDKs want the /v1 base).
    url_suffix: str


_SDKS = (
    _Sdk(("OPENAI_BASE_URL", "OPENAI_API_BASE"), "OPENAI_API_KEY", "authorization", "/v1"),
    _Sdk(("ANTHROPIC_BASE_URL",), "ANTHROPIC_API_KEY", "x-api-key", ""),
)


def _endpoint_for(sdk: _Sdk, endpoints: Sequence[Endpoint]) -> Endpoint:
    """The first endpoint whose target takes its key where ``sdk`` sends one, else the first
    whose target adds none, else the first (the main port)."""

    def fit(endpoint: Endpoint) -> int:
        if sdk.key_header in endpoint.key_headers:
            return 0
        return 1 if not endpoint.key_headers else 2

    return min(endpoints, key=fit)  # min keeps the first of equals


def environment_lines(endpoints: Sequence[Endpoint], *, shell: Shell, local_token: str | None = None) -> str:
    """The lines for ``shell``, one variable per line, ending with a newline; ``endpoints``
    start with the main port; ``local_token`` is the token the proxy asks for, None when it
    asks for none. Raises ValueError when ``endpoints`` is empty."""
    if not endpoints:
        raise ValueError("no address to point the SDKs at")
    urls: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    for sdk in _SDKS:
        endpoint = _endpoint_for(sdk, endpoints)
        base = endpoint.url.rstrip("/") + sdk.url_suffix
        urls += [(name, base) for name in sdk.url_variables]
        key = local_token or (PLACEHOLDER_KEY if endpoint.adds_key else None)
        if key is not None:
            keys.append((sdk.key_variable, key))
    notes = []
    if keys:
        # The key lines replace whatever key the shell had; said on stdout, where `eval` and a
        # paste keep it, as a comment the shell skips (warnings on stderr vanish in eval).
        what = "TrayProxy's local access token" if local_token else "a placeholder"
        notes.append(
            f"{', '.join(name for name, _ in keys)} hold {what}, for your tools: TrayProxy adds the real"
            " key on the way out and reads your real keys itself, so do not start it where these lines ran"
        )
    return "".join(_comment(shell, note) for note in notes) + "".join(
        _assignment(shell, name, value) for name, value in urls + keys
    )


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
