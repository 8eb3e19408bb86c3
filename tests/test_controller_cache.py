"""The chosen target's cache mode, set through the controller as the tray's Cache menu does.

What a person would notice: picking Record, Replay or Offline applies to the target requests
go to now, is written into that target's table of the file (comments kept), and the menu shows
the mode the file gives (an edit by hand shows too); a file with a mistake is not written over,
and the mode stays as it was; without a file (``serve --target URL``) the mode applies until
the stop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from background import wait_until
from test_config_follow import FOLLOW_TIMEOUT_S, config_text, start_following

from desktop.config.model import ProxySettings, Target
from desktop.config.store import load_config
from desktop.controller import ProxyController


def test_the_chosen_targets_mode_is_applied_saved_and_shown(tmp_path: Path, follow: list[ProxyController]) -> None:
    path = tmp_path / "config.toml"
    original = config_text(
        {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:10"}, active="b", extra="# the end\n"
    )
    path.write_text(original)
    controller = start_following(follow, path)
    assert controller.status.cache_mode == "off"

    controller.set_cache_mode("replay")
    assert controller.status.cache_mode == "replay"
    assert controller.target.cache == "replay"
    assert path.read_text() == original.replace(
        'url = "http://127.0.0.1:10"\n', 'url = "http://127.0.0.1:10"\ncache = "replay"\n'
    )
    assert load_config(path).targets["a"].cache == "off"  # only the chosen target's

    controller.choose_target("a")
    assert controller.status.cache_mode == "off"  # a's own mode
    controller.set_cache_mode("offline")
    assert load_config(path).targets["a"].cache == "offline"
    controller.choose_target("b")
    assert controller.status.cache_mode == "replay"

    # An edit by hand shows in the status once the watcher reads it.
    path.write_text(path.read_text().replace('cache = "replay"', 'cache = "record"'))
    assert wait_until(lambda: controller.status.cache_mode == "record", timeout_s=FOLLOW_TIMEOUT_S)


def test_a_file_with_a_mistake_is_not_written_over_and_the_mode_stays(
    tmp_path: Path, follow: list[ProxyController]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text({"a": "http://127.0.0.1:9"}, active="a"))
    controller = start_following(follow, path)
    broken = path.read_text().replace("port = 0", "port = 0x")
    controller.close()  # no watcher reading the broken file meanwhile
    path.write_text(broken)
    with pytest.raises(RuntimeError, match=r"could not save the cache mode of a: .*config\.toml:\d+:\d+: "):
        controller.set_cache_mode("record")
    assert path.read_text() == broken
    assert controller.status.cache_mode == "off"
    with pytest.raises(ValueError, match="a cache mode is one of off, record, replay, offline"):
        controller.set_cache_mode("always")


def test_without_a_file_the_mode_holds_until_the_stop() -> None:
    controller = ProxyController(
        ProxySettings(hosts=("127.0.0.1",), port=0), Target(url="http://127.0.0.1:9", cache="record")
    )
    try:
        assert controller.status.cache_mode == "record"
        controller.start()
        controller.set_cache_mode("offline")
        assert (controller.status.cache_mode, controller.target.cache) == ("offline", "offline")
    finally:
        controller.close(grace_s=0.5)
