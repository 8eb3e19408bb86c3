"""Ready-to-paste lines that point the common SDKs at TrayProxy: pure text, no UI.

The OpenAI SDKs (Python, Node) read ``OPENAI_BASE_URL`` and want the ``/v1`` base; some older
tools read ``OPENAI_API_BASE`` instead. The Anthropic SDKs read ``ANTHROPIC_BASE_URL`` without
``/v1`` (they add it). When TrayProxy adds the key itself, SDKs that refuse to start without
one get a placeholder: the proxy replaces it with the real key on the way out. When the proxy
asks for its local access token (``[security] require_token``), the key variables carry that
token instead: the SDKs send it as their key, the proxy checks it and puts the real key in.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["PLACEHOLDER_KEY", "Shell", "environment_lines"]

Shell = Literal["posix", "powershell"]
# Sent by the SDK, replaced by the proxy; visibly not a real key.
PLACEHOLDER_KEY = "added-by-trayproxy"


def environment_lines(
    local_url: str, *, shell: Shell, key_added_by_proxy: bool, local_token: str | None = None
) -> str:
    """The lines for ``shell``, one variable per line, ending with a newline; ``local_token``
    is the token the proxy asks for, None when it asks for none."""
    base = local_url.rstrip("/")
    variables = [
        ("OPENAI_BASE_URL", base + "/v1"),
        ("OPENAI_API_BASE", base + "/v1"),
        ("ANTHROPIC_BASE_URL", base),
    ]
    key = local_token or (PLACEHOLDER_KEY if key_added_by_proxy else None)
    if key is not None:
        variables += [("OPENAI_API_KEY", key), ("ANTHROPIC_API_KEY", key)]
    if shell == "powershell":
        return "".join(f'$env:{name} = "{value}"\n' for name, value in variables)
    return "".join(f"export {name}={value}\n" for name, value in variables)
