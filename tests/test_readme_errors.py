"""The README's "Errors you may see" table and Safety section say what the engine really does.

The table lacked most of the codes the engine answers with (tls_error, connect_timeout,
bad_host, ...), and Safety promised 431 for any header over 8 KiB where the HTTP parser answers
400 past 8,190 bytes. Every ``code="..."`` in ``desktop/engine`` must have a row, and no row may
name a code the engine does not have, so the table cannot drift again.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
ENGINE = REPO / "desktop" / "engine"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def engine_error_codes() -> set[str]:
    """Every error code the engine can answer with, read from its source."""
    codes: set[str] = set()
    for path in ENGINE.glob("*.py"):
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text(encoding="utf-8")))
    return codes


def readme_table_codes() -> set[str]:
    """The codes in the second column of the README's error table."""
    codes: set[str] = set()
    for line in _section("Errors you may see").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3:
            codes |= set(re.findall(r"`([a-z_]+)`", cells[1]))
    return codes


def test_every_engine_error_code_has_a_row_in_the_readme_table() -> None:
    engine = engine_error_codes()
    assert {"tls_error", "local_token_unavailable", "bad_request"} <= engine  # the scan works
    assert sorted(engine - readme_table_codes()) == []


def test_the_readme_table_names_no_code_the_engine_lacks() -> None:
    assert sorted(readme_table_codes() - engine_error_codes()) == []


def test_readme_safety_says_which_oversized_header_gets_431_and_which_line_400() -> None:
    """Pinned on the wire by tests/engine/test_guard.py (any header line over 8 KiB: 431; a
    request line over 16 KiB: 400)."""
    safety = " ".join(_section("Safety").split())
    assert "A header line over 8 KiB gets 431 (`header_too_large`)" in safety
    assert "431 (`headers_too_large`)" in safety
    assert "a request line over 16 KiB gets 400" in safety


def test_troubleshooting_suggests_a_port_the_default_config_does_not_propose() -> None:
    """The first-run file suggests `port = 8001` for Anthropic; "pick another port" must not
    send a person onto it."""
    from desktop.config.store import DEFAULT_CONFIG

    proposed = {int(port) for port in re.findall(r"port = (\d+)", DEFAULT_CONFIG)}
    suggested = {int(port) for port in re.findall(r"--port (\d+)", _section("Troubleshooting"))}
    assert suggested, "Troubleshooting suggests no --port"
    assert sorted(suggested & proposed) == []
