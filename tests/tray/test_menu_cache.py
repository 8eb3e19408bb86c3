"""The tray's Cache menu: the chosen target's recorded-answers mode, on pystray's dummy backend.

What a person sees: Cache ▸ says whose answers it is about and offers Off, Record, Replay and
Offline as radio items, the target's mode checked; picking one writes it into the target's
table of the config file and the menu and status line follow; when the file cannot be written
the person is told why and the mode stays.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pystray
import pytest
from background import wait_until
from test_menu import RUNNING, by_text, items

from desktop.config import options
from desktop.config.store import load_config
from desktop.controller import ConfigBinding, ProxyController, ProxyStatus
from desktop.tray.app import TrayApp
from desktop.tray.menu import CACHE_LABELS, TrayView, build_menu, status_line

# The tray's action runs on a thread of its own; a file write and a reload take well under this.
ACTION_TIMEOUT_S = 10.0


def cache_menu(menu: pystray.Menu) -> list[pystray.MenuItem]:
    submenu = by_text(menu)["Cache"].submenu
    assert submenu is not None
    return items(submenu)


def test_the_cache_menu_offers_each_mode_of_the_chosen_target_with_its_own_checked() -> None:
    calls: list[tuple[str, str | None]] = []
    replaying = replace(RUNNING, cache_mode="replay")
    entries = cache_menu(build_menu(TrayView(replaying, "1"), lambda a, b: calls.append((a, b))))
    assert [entry.text for entry in entries] == ["Recorded answers of openai", "Off", "Record", "Replay", "Offline"]
    assert not entries[0].enabled
    modes = entries[1:]
    assert all(entry.radio for entry in modes)
    assert [entry.checked for entry in modes] == [False, False, True, False]
    modes[3](None)
    assert calls == [("cache", "offline")]
    assert tuple(CACHE_LABELS) == options.CACHE_MODE.choices


def test_the_status_line_says_a_mode_other_than_off() -> None:
    assert status_line(RUNNING) == "TrayProxy: running on 127.0.0.1:8000 → openai"
    offline = ProxyStatus("running", "openai", "u", addresses=(("127.0.0.1", 8000),), cache_mode="offline")
    assert status_line(offline) == "TrayProxy: running on 127.0.0.1:8000 → openai (cache: offline)"
    stopped = ProxyStatus("stopped", "openai", "u", cache_mode="record")
    assert status_line(stopped) == "TrayProxy: stopped (openai; cache: record)"


def write_config(path: Path) -> str:
    text = (
        '[listen]\nhosts = ["127.0.0.1"]\nport = 0\n\n'
        '[targets.local]\nurl = "http://127.0.0.1:9"  # the model server\n'
        "# notes about the next one\n"
        '[targets.other]\nurl = "http://127.0.0.1:10"\n'
    )
    path.write_text(text)
    return text


def click_cache(app: TrayApp, label: str) -> None:
    [entry] = [entry for entry in cache_menu(app.icon.menu) if entry.text == label]
    entry(app.icon)


def test_picking_a_mode_saves_it_for_the_chosen_target_and_the_menu_follows(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    original = write_config(config)
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        controller.start()
        app = TrayApp(controller, log_dir=tmp_path / "log")
        assert [entry.checked for entry in cache_menu(app.icon.menu)[1:]] == [True, False, False, False]
        click_cache(app, "Record")
        # The status is published before its listeners run: the menu follows a moment later.
        assert wait_until(
            lambda: [entry.checked for entry in cache_menu(app.icon.menu)[1:]] == [False, True, False, False],
            timeout_s=ACTION_TIMEOUT_S,
        )
        assert controller.status.cache_mode == "record"
        assert app.icon.title.endswith("→ local (cache: record)")
        assert config.read_text() == original.replace(
            "# the model server\n", '# the model server\ncache = "record"\n'
        )
        assert load_config(config).targets["other"].cache == "off"
    finally:
        controller.close(grace_s=0.5)


def test_a_mode_that_cannot_be_saved_is_told_and_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.toml"
    write_config(config)
    controller = ProxyController.from_config(ConfigBinding(config, watch=False))
    try:
        app = TrayApp(controller, log_dir=tmp_path / "log")
        broken = config.read_text().replace("port = 0", "port = 0x")
        config.write_text(broken)
        with caplog.at_level(logging.INFO, logger="trayproxy"):
            click_cache(app, "Offline")
            assert wait_until(lambda: "Cache mode not changed" in caplog.text, timeout_s=ACTION_TIMEOUT_S)
        assert f"Cache mode not changed: could not save the cache mode of local: {config}:3:" in caplog.text
        assert config.read_text() == broken
        assert controller.status.cache_mode == "off"
    finally:
        controller.close(grace_s=0.5)
