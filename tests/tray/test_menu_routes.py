"""The Target menu and the status line with routes on the main port (issue 14), on pystray's
dummy backend: what each target claims, and which are tried last for now."""

from __future__ import annotations

import time
from dataclasses import replace

import pystray

from desktop.controller import ProxyStatus, RouteClaim
from desktop.engine.condition import TargetCondition
from desktop.tray.menu import Act, TrayView, build_menu, status_line

NOW = 1_750_000_000.0  # wall clock the menus below are made at
COOLING_END = NOW + 420.0


def hh_mm(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


ROUTED = ProxyStatus(
    "running",
    "openai",
    "https://api.openai.com",
    addresses=(("127.0.0.1", 8000),),
    targets=("openai", "anthropic", "openrouter", "ollama"),
    routes=(
        RouteClaim("anthropic", ("/anthropic",), ("claude-*",), frozenset({"x-api-key"}), adds_key=True),
        RouteClaim("openrouter", (), ("gpt-oss-*", "llama-*"), frozenset({"authorization"}), adds_key=True),
    ),
    # openrouter is tried last for 7 more minutes; ollama's cool-down is over.
    cooling=(("ollama", NOW - 5.0), ("openrouter", COOLING_END)),
)


def target_items(status: ProxyStatus, act: Act | None = None) -> list[pystray.MenuItem]:
    menu = build_menu(TrayView(status, "1", now=NOW), act or (lambda action, arg: None))
    target = next(item for item in menu.items if item.text == "Target")
    return [item for item in target.submenu.items if item is not pystray.Menu.SEPARATOR]


def test_each_target_shows_its_claims_and_a_cool_down_at_a_glance() -> None:
    """anthropic and openrouter say what they claim on the main port; openrouter, in a
    cool-down, says until when it is tried last; ollama, whose cool-down has ended, and the
    chosen openai (which takes everything else) show their names alone."""
    assert [item.text for item in target_items(ROUTED)] == [
        "openai",
        "anthropic — /anthropic, claude-*",
        f"openrouter — gpt-oss-*, llama-*; tried last until {hh_mm(COOLING_END)} (failing)",
        "ollama",
    ]


def test_choosing_a_target_with_claims_asks_for_it_by_name_and_the_check_follows_the_choice() -> None:
    """The longer labels do not leak into the choice: clicking 'anthropic — /anthropic, ...'
    asks for 'anthropic', and the radio mark is on the chosen target whatever its label."""
    asked: list[tuple[str, str | None]] = []
    items = target_items(ROUTED, lambda action, arg: asked.append((action, arg)))
    items[1](None)
    items[2](None)
    assert asked == [("target", "anthropic"), ("target", "openrouter")]
    assert [item.checked for item in items] == [True, False, False, False]
    chosen = replace(ROUTED, target_name="openrouter")
    assert [item.checked for item in target_items(chosen)] == [False, False, True, False]


def test_the_status_line_names_the_targets_in_a_cool_down_beside_the_problem() -> None:
    """The first line of the menu (and the tooltip) says a target is tried last while it is,
    after any problem; not once the cool-down has ended, nor while the proxy is stopped."""
    running = "TrayProxy: running on 127.0.0.1:8000 → openai"
    cooling = f"openrouter tried last until {hh_mm(COOLING_END)}"
    assert status_line(ROUTED, NOW) == f"{running} — {cooling}"
    menu = build_menu(TrayView(ROUTED, "1", now=NOW), lambda action, arg: None)
    assert menu.items[0].text == f"{running} — {cooling}"
    rejected = replace(
        ROUTED, condition=TargetCondition("openai", "key_rejected", "openai rejected the key (HTTP 401)", 401)
    )
    assert status_line(rejected, NOW) == f"{running} — openai rejected the key (HTTP 401); {cooling}"
    assert status_line(ROUTED, COOLING_END + 1) == running
    stopped = replace(ROUTED, state="stopped", addresses=())
    assert status_line(stopped, NOW) == "TrayProxy: stopped (openai)"
    assert [item.text for item in target_items(stopped)][2] == "openrouter — gpt-oss-*, llama-*"


def test_without_routes_the_target_menu_is_as_before() -> None:
    plain = replace(ROUTED, routes=(), cooling=())
    assert [item.text for item in target_items(plain)] == ["openai", "anthropic", "openrouter", "ollama"]
    assert status_line(plain, NOW) == "TrayProxy: running on 127.0.0.1:8000 → openai"
