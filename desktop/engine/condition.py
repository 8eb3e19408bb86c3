"""How a target is doing, as its answers show: fine, key rejected, rate limited, unreachable.

The tray shows the last problem until it clears and notifies when one starts, and the key of a
``command`` source is fetched again on a 401; both need to know when a target's condition
changes, not every response. Each pool keeps its last condition kind, so the hot path costs one
comparison per request and the listener runs only on a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from desktop.config.model import Target
from desktop.redaction import SENSITIVE_HEADERS

__all__ = ["ConditionKind", "Credentials", "TargetCondition", "adds_key", "classify", "credentials_of", "describe"]

ConditionKind = Literal["ok", "key_rejected", "rate_limited", "unreachable"]
# Whose credentials a target gets: a key the proxy adds ("proxy"), the client's own headers,
# passed through ("client"), or none at all (the client's holds the local token, which the
# proxy keeps to itself, and the target has no key of its own).
Credentials = Literal["proxy", "client", "none"]

# The proxy's own answers (errors.py codes) that mean the target could not be reached at all.
UNREACHABLE_CODES = frozenset(
    {
        "dns_error",
        "tls_certificate_error",
        "tls_error",
        "proxy_error",
        "connect_timeout",
        "upstream_timeout",
        "connection_refused",
        "connect_error",
        "upstream_disconnected",
        "connection_reset",
        "bad_upstream_response",
        "upstream_error",
    }
)


@dataclass(frozen=True, slots=True)
class TargetCondition:
    """A change in how a target answers, in words a person can act on."""

    # The target as shown (redact.display_target: its name, or its URL masked).
    target_name: str
    kind: ConditionKind
    # Plain words for the tray and the log, e.g. "OpenAI rejected the key (HTTP 401)".
    message: str
    # The target's HTTP status, or 0 when it was not reached.
    status: int = 0


def classify(status: int, code: str) -> ConditionKind | None:
    """The kind a finished request shows; None when it says nothing about the target (a 404,
    a 500 from the model server, a request refused by the proxy's own guard)."""
    if code in UNREACHABLE_CODES:
        return "unreachable"
    if status in (401, 403):
        return "key_rejected"
    if status == 429:
        return "rate_limited"
    if 100 <= status < 400:
        return "ok"
    return None


def adds_key(target: Target) -> bool:
    """True when the proxy puts a credential header (Authorization, x-api-key, ...: any header
    may hold a key, but these are where one goes) in for ``target``."""
    return any(header.lower() in SENSITIVE_HEADERS for header, _ in target.add_headers)


def credentials_of(target: Target, *, token_required: bool) -> Credentials:
    """Whose credentials ``target``'s requests carry: a key the proxy adds, else the client's
    own, unless the local token check keeps those in the proxy."""
    if adds_key(target):
        return "proxy"
    return "none" if token_required else "client"


def describe(
    target_name: str, kind: ConditionKind, status: int, detail: str, *, credentials: Credentials = "proxy"
) -> TargetCondition:
    """The condition with its message; ``detail`` is the proxy's own error text when unreachable.
    A 401 or 403 blames the proxy's key only when the proxy sent one (``credentials``)."""
    if kind == "key_rejected" and credentials == "client":
        message = (
            f"{target_name} answered HTTP {status} to the client's own credentials"
            " (TrayProxy adds no key for this target)"
        )
    elif kind == "key_rejected" and credentials == "none":
        message = (
            f"{target_name} answered HTTP {status}: it got no key (TrayProxy adds none for this target,"
            " and the client's is the local access token, which is not passed on)"
        )
    elif kind == "key_rejected":
        message = f"{target_name} rejected the key (HTTP {status})"
    elif kind == "rate_limited":
        message = f"{target_name} is rate limiting requests (HTTP 429)"
    elif kind == "unreachable":
        message = detail or f"{target_name} cannot be reached"
    else:
        message = f"{target_name} answers normally"
    return TargetCondition(target_name, kind, message, status)
