"""The inspector page in headless Chromium says which answers came from the recording.

A real ``trayproxy serve`` following its file (test_page_browser's fixtures): the target's
``cache`` is set to "replay" in the file, the openai SDK asks the same thing twice, and the page
shows the first row as recorded and the second as replayed, in the list, the cell's tooltip
and the detail, and the text filter finds them by those words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from background import wait_until
from test_page_browser import WAIT_S, Inspector, browser, inspector, open_page, wait

__all__ = ["browser", "inspector"]

PROMPT = [{"role": "user", "content": "the same question"}]


def test_the_list_and_the_detail_say_replayed_and_recorded(
    browser: Any, inspector: Inspector, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("\n[inspector]", '\ncache = "replay"\n[inspector]'))
    assert wait_until(lambda: inspector.serve.lines_with("config reloaded"), timeout_s=WAIT_S)
    inspector.target.release.set()
    with inspector.sdk() as client:
        answers = [
            "".join(
                piece.choices[0].delta.content or ""
                for piece in client.chat.completions.create(model="gpt-test", messages=PROMPT, stream=True)  # type: ignore[arg-type]
                if piece.choices
            )
            for _ in range(2)
        ]
    assert answers[0] == answers[1] != ""
    open_page(browser, inspector)
    wait(browser, lambda d: len(d.find_elements("css selector", "#row-body tr[data-state='done']")) == 2, "both rows")
    cells = browser.find_elements("css selector", '#row-body tr td[data-col="target"]')
    assert [cell.text for cell in cells] == ["openai · replayed", "openai · recorded"]  # newest first
    assert cells[0].get_attribute("title") == "answered from the recording: the target was not asked"

    browser.find_elements("css selector", "#row-body tr")[0].click()
    summary = wait(browser, lambda d: d.find_element("id", "detail-summary").text, "the detail")
    assert "answered from the recording" in summary

    browser.find_element("id", "filter-text").send_keys("replayed")
    shown = [row for row in browser.find_elements("css selector", "#row-body tr") if row.is_displayed()]
    assert len(shown) == 1
