"""The tray's failover notification (issue 14): worded for a person, told once per failed
target and cause, rate-limited (a clock the test turns)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from desktop.controller import FailoverNotice, ProxyStatus
from desktop.tray.failovers import FAILOVER_GAP_S, FAILOVER_REPEAT_S, FailoverNotifier, failover_message

AT = 1_750_000_000.0
BASE = ProxyStatus(
    "running",
    "anthropic",
    "https://api.anthropic.com",
    addresses=(("127.0.0.1", 8000),),
    targets=("anthropic", "openrouter"),
)


def hh_mm(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def failed(failed: str, cause: str, next: str | None, *, at: float = AT, cooling: float | None = None) -> ProxyStatus:
    """A status whose latest failover is ``failed`` for ``cause``, ``next`` taking over; with
    ``cooling``, ``failed`` is tried last until then."""
    return replace(
        BASE,
        failover=FailoverNotice(failed, cause, next, at),
        cooling=((failed, cooling),) if cooling is not None else (),
    )


def message(status: ProxyStatus) -> str:
    assert status.failover is not None
    return failover_message(status.failover, status)


@pytest.mark.parametrize(
    ("cause", "what"),
    [
        ("529", "answered 529 (overloaded)"),
        ("429", "answered 429 (rate limited)"),
        ("503", "answered 503 (unavailable)"),
        ("418", "answered 418"),
        ("connection_refused", "refused the connection"),
        ("upstream_timeout", "did not answer in time"),
        ("dns_error", "could not be found (its host name did not resolve)"),
        ("error event", "sent an error event instead of an answer"),
        ("empty answer", "sent an empty answer"),
        ("something_new", "failed (something_new)"),
    ],
)
def test_a_failover_is_worded_for_a_person(cause: str, what: str) -> None:
    """'anthropic answered 529 (overloaded); openrouter took over': the targets by name, the
    cause in words."""
    status = failed("anthropic", cause, "openrouter")
    assert message(status) == f"anthropic {what}; openrouter took over"


def test_the_message_says_when_a_cool_down_began_or_that_nothing_was_left() -> None:
    end = AT + 30
    status = failed("anthropic", "529", "openrouter", cooling=end)
    assert message(status) == (
        f"anthropic answered 529 (overloaded); openrouter took over; anthropic is tried last until {hh_mm(end)}"
    )
    last = failed("openrouter", "connection_refused", None, cooling=end)
    assert message(last) == (
        f"openrouter refused the connection; openrouter is tried last until {hh_mm(end)}"
    )
    # A cool-down that had ended by the failover is not the one it began.
    stale = failed("openrouter", "503", None, cooling=AT - 1)
    assert message(stale) == (
        "openrouter answered 503 (unavailable); no other target could answer it"
    )


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_failover_is_told_once_and_the_same_cause_not_again_within_ten_minutes() -> None:
    """Every status after a failover carries it: told once. The same target failing for the
    same cause again is not told for FAILOVER_REPEAT_S (10 minutes), then it is."""
    assert FAILOVER_REPEAT_S == 600
    clock = Clock()
    notifier = FailoverNotifier(clock=clock)
    assert notifier.message_for(BASE) is None  # no failover yet
    first = failed("anthropic", "529", "openrouter")
    assert notifier.message_for(first) == "anthropic answered 529 (overloaded); openrouter took over"
    assert notifier.message_for(replace(first, target_name="openrouter")) is None  # the same failover
    for minutes in range(1, 10):
        clock.now = 100.0 + minutes * 60
        assert notifier.message_for(failed("anthropic", "529", "openrouter", at=AT + minutes * 60)) is None
    clock.now = 100.0 + FAILOVER_REPEAT_S
    assert notifier.message_for(failed("anthropic", "529", "openrouter", at=AT + 600)) is not None


def test_no_more_than_one_failover_notification_a_minute() -> None:
    """A second cause within FAILOVER_GAP_S (a minute) is not told; told once that has passed.
    One not told counts nothing against its cause."""
    assert FAILOVER_GAP_S == 60
    clock = Clock()
    notifier = FailoverNotifier(clock=clock)
    assert notifier.message_for(failed("anthropic", "529", "openrouter")) is not None
    clock.now += 59
    assert notifier.message_for(failed("openrouter", "503", None, at=AT + 59)) is None
    clock.now += 1
    assert notifier.message_for(failed("openrouter", "503", None, at=AT + 60)) == (
        "openrouter answered 503 (unavailable); no other target could answer it"
    )
    clock.now += 61
    assert notifier.message_for(failed("anthropic", "connection_refused", "openrouter", at=AT + 121)) is not None


def test_a_failover_from_before_the_tray_came_is_not_told() -> None:
    earlier = failed("anthropic", "529", "openrouter")
    notifier = FailoverNotifier(seen=earlier.failover, clock=Clock())
    assert notifier.message_for(earlier) is None
    assert notifier.message_for(failed("anthropic", "529", "openrouter", at=AT + 1)) is not None
