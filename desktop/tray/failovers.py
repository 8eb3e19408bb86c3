"""What the tray says about failover: a cool-down in words, and the notification when a target
failed and another took over, rate-limited.

Pure but for the clock the rate limit reads (injected): made from the controller's snapshot
(``ProxyStatus.failover``, ``.cooling``), it names targets by their config names and says what
went wrong in a person's words, never a URL or a header, so no key can reach a notification.
Imports the controller's snapshot types only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from desktop.controller import FailoverNotice, ProxyStatus

__all__ = [
    "FAILOVER_GAP_S",
    "FAILOVER_REPEAT_S",
    "FailoverNotifier",
    "clock_time",
    "cooling_text",
    "failover_message",
]

# The same failed target and cause is told again only after this long: a target that keeps
# answering 529 for an hour gives six notifications, not one per request.
FAILOVER_REPEAT_S = 600.0
# At most one failover notification this often, whatever failed: several targets failing
# together (a network outage) make one notification a minute; the menu shows the rest.
FAILOVER_GAP_S = 60.0

# What an answer's status means, beside its number (RFC 9110 §15.5.20, §15.6; Anthropic's 529).
_STATUS_WORDS = {
    "429": "rate limited",
    "500": "server error",
    "502": "bad gateway",
    "503": "unavailable",
    "504": "gateway timeout",
    "529": "overloaded",
}
# What the engine's failure codes (engine/errors.py, engine/failover.py) mean, said of a target.
_CAUSE_WORDS = {
    "connection_refused": "refused the connection",
    "connection_reset": "reset the connection without answering",
    "connect_timeout": "did not accept a connection in time",
    "connect_error": "could not be reached",
    "dns_error": "could not be found (its host name did not resolve)",
    "tls_error": "failed the TLS handshake",
    "tls_certificate_error": "sent a TLS certificate that is not trusted",
    "proxy_error": "could not be reached through the outgoing proxy",
    "upstream_timeout": "did not answer in time",
    "upstream_disconnected": "closed the connection without answering",
    "bad_upstream_response": "sent an answer TrayProxy cannot read",
    "upstream_error": "could not be reached",
    "websocket_refused": "refused the WebSocket",
    "empty answer": "sent an empty answer",
    "error event": "sent an error event instead of an answer",
    "stream cut": "broke off its answer midway",
}


def clock_time(when: float) -> str:
    """``17:42:05``: the wall-clock time ``when`` (seconds since the epoch), local, to the
    second (a 30 s cool-down shown to the minute reads as over while it still runs)."""
    return time.strftime("%H:%M:%S", time.localtime(when))


def cooling_text(end: float) -> str:
    """``tried last until 17:42:05 (failing)``: a target in a cool-down ending at ``end``."""
    return f"tried last until {clock_time(end)} (failing)"


def _what_went_wrong(cause: str) -> str:
    if cause.isdigit():
        words = _STATUS_WORDS.get(cause)
        return f"answered {cause} ({words})" if words else f"answered {cause}"
    return _CAUSE_WORDS.get(cause, f"failed ({cause})")


def failover_message(notice: FailoverNotice, status: ProxyStatus) -> str:
    """``anthropic answered 529 (overloaded); openrouter took over``, with the cool-down the
    failure began (``status.cooling`` as of the failover) or that no other target could answer."""
    parts = [f"{notice.failed} {_what_went_wrong(notice.cause)}"]
    if notice.next is not None:
        parts.append(f"{notice.next} took over")
    cooling_end = next((end for name, end in status.cooling if name == notice.failed and end > notice.at), None)
    if cooling_end is not None:
        parts.append(f"{notice.failed} is tried last until {clock_time(cooling_end)}")
    elif notice.next is None:
        parts.append("no other target could answer it")
    return "; ".join(parts)


class FailoverNotifier:
    """Which failovers to tell: each new one, unless the same target failed for the same
    cause within FAILOVER_REPEAT_S or any was told within FAILOVER_GAP_S. ``clock``: seconds,
    monotonic."""

    def __init__(self, *, seen: FailoverNotice | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # The latest failover looked at (``seen``: one from before the tray came, never told).
        self._seen = seen
        self._told_at: dict[tuple[str, str], float] = {}
        self._last_told: float | None = None
        # Snapshots arrive on whichever thread made the change.
        self._lock = threading.Lock()

    def message_for(self, status: ProxyStatus) -> str | None:
        """The notification ``status``'s failover calls for, or None: not new, or too soon."""
        notice = status.failover
        with self._lock:
            if notice is None or notice == self._seen:
                return None
            self._seen = notice
            now = self._clock()
            cause = (notice.failed, notice.cause)
            told = self._told_at.get(cause)
            if told is not None and now - told < FAILOVER_REPEAT_S:
                return None
            if self._last_told is not None and now - self._last_told < FAILOVER_GAP_S:
                return None
            self._told_at[cause] = now
            self._last_told = now
        return failover_message(notice, status)
