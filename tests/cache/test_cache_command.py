"""``trayproxy cache stats|clear|export|import``, run as the real CLI in the test's own home.

What a person would notice: stats says how many answers are recorded, per target, against the
cap their config gives, and where the file is (and makes no file when there is none); an export
imported into a fresh home gives the same recording back, which is the CI recipe; a bad line
in an import is named with its number and what is wrong, and nothing is imported; an entry
holding a key the config sends is refused; clear takes one target's answers or all; all of it
works while another process (a running TrayProxy) holds the recording open.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cli_process import run_cli
from isolated_home import home_environ
from recorded import chat_exchange

from desktop.cache import RecordingStore, default_store_path, export_to

MIB = 1024 * 1024
# A key the config's target sends, found by the import in a recording that holds it.
CANARY_KEY = "sk-cachecmd-canary-0123456789abcdef"


def seed(*exchanges_of: tuple[str, str]) -> None:
    """Record a chat answer per (target, prompt) in this home's recording, a second apart."""
    with RecordingStore.open() as store:
        for at, (target, prompt) in enumerate(exchanges_of):
            assert store.put(chat_exchange(prompt, target=target, recorded_at=1_780_000_000 + at), max_bytes=MIB)


def fresh_home(tmp_path: Path) -> dict[str, str]:
    """The environment of another machine: a home with nothing recorded and no config file."""
    return {**os.environ, **home_environ(tmp_path / "other-home")}


def test_stats_on_a_fresh_home_says_where_answers_will_go_and_makes_no_file() -> None:
    result = run_cli("cache", "stats")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "No recorded answers yet (cap 1024 MiB).\n"
        f"They are kept in {default_store_path()} once a target's cache mode is record or replay.\n"
    )
    assert not default_store_path().exists()


def test_stats_counts_per_target_against_the_configs_cap(tmp_path: Path) -> None:
    seed(("openai", "one"), ("anthropic", "two"), ("openai", "three"))
    config = tmp_path / "config.toml"
    config.write_text('[cache]\nmax_mib = 64\n[targets.openai]\nurl = "https://api.openai.com"\n')
    result = run_cli("cache", "stats", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("3 recorded answers, ")
    assert lines[0].endswith(" (cap 64 MiB).")
    assert lines[1].startswith("  anthropic  1 recorded answer, ")
    assert lines[2].startswith("  openai     2 recorded answers, ")
    assert lines[3] == "Recorded from 2026-05-28 20:26 UTC to 2026-05-28 20:26 UTC."
    assert lines[4].startswith(f"File: {default_store_path()} (")


def test_an_export_imported_on_a_fresh_home_gives_the_same_recording(tmp_path: Path) -> None:
    """The CI recipe: export here, commit the file, import on the CI machine."""
    seed(("openai", "one"), ("anthropic", "two"), ("openai", "three"))
    exported = tmp_path / "recorded.jsonl"
    result = run_cli("cache", "export", "-o", str(exported))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"Exported 3 recorded answers to {exported}.\n")
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600  # prompts and answers: owner-only
    assert [json.loads(line)["target"] for line in exported.read_text().splitlines()] == [
        "openai",
        "anthropic",
        "openai",
    ]
    only_openai = run_cli("cache", "export", "--target", "openai")
    assert [json.loads(line)["target"] for line in only_openai.stdout.splitlines()] == ["openai", "openai"]

    elsewhere = fresh_home(tmp_path)
    imported = run_cli("cache", "import", str(exported), env=elsewhere)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"Imported 3 recorded answers from {exported} into ")
    again = run_cli("cache", "export", env=elsewhere)
    assert again.stdout == exported.read_text()
    from_stdin = run_cli("cache", "import", "-", stdin=only_openai.stdout, env=fresh_home(tmp_path / "third"))
    assert from_stdin.stdout.startswith("Imported 2 recorded answers from standard input into ")


def test_an_import_past_the_cap_says_how_many_answers_the_cap_dropped(tmp_path: Path) -> None:
    """It said "Imported 10" when the cap kept 3, and nothing else (cold user trial)."""
    with RecordingStore.open(tmp_path / "big.sqlite3") as store:
        for n in range(4):
            assert store.put(chat_exchange(f"big {n}", answer=b"x" * 400_000), max_bytes=64 * MIB)
        exported = tmp_path / "big.jsonl"
        with exported.open("w") as out:
            assert export_to(store, out) == 4
    config = tmp_path / "config.toml"
    config.write_text('[cache]\nmax_mib = 1\n[targets.openai]\nurl = "https://api.openai.com"\n')
    result = run_cli("cache", "import", "--config", str(config), str(exported))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Imported 4 recorded answers from {exported} into ")
    assert result.stderr.startswith(
        "The cap (1 MiB, [cache] max_mib) is full: 2 recorded answers used least recently were dropped"
    )
    assert run_cli("cache", "stats").stdout.startswith("2 recorded answers, ")


def test_a_bad_line_is_named_and_nothing_is_imported(tmp_path: Path) -> None:
    seed(("openai", "one"), ("openai", "two"), ("openai", "three"))
    lines = run_cli("cache", "export").stdout.splitlines()
    broken = json.loads(lines[1])
    broken["response"]["status"] = "200"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    elsewhere = fresh_home(tmp_path)
    result = run_cli("cache", "import", str(bad), env=elsewhere)
    assert result.returncode == 1
    assert result.stderr.startswith(f"trayproxy cache import: {bad}: line 2: response.status ")
    assert result.stderr.rstrip().endswith("; nothing was imported")
    # The other home is left as it was: no recording file made by the refused import.
    assert run_cli("cache", "stats", env=elsewhere).stdout.startswith("No recorded answers yet")
    assert not list((tmp_path / "other-home").rglob("*.sqlite3*"))

    not_json = tmp_path / "notes.txt"
    not_json.write_text(lines[0] + "\nmy notes\n")
    result = run_cli("cache", "import", str(not_json), env=elsewhere)
    assert result.returncode == 1
    assert f"{not_json}: line 2: not JSON" in result.stderr
    missing = run_cli("cache", "import", str(tmp_path / "nowhere.jsonl"), env=elsewhere)
    assert (missing.returncode, missing.stderr) == (
        1,
        f"trayproxy cache import: {tmp_path / 'nowhere.jsonl'}: no such file\n",
    )


def test_an_entry_holding_a_key_the_config_sends_is_refused(tmp_path: Path) -> None:
    """A recording made elsewhere (or edited) that carries this machine's key is not written to
    disk here: the import reads the config's keys first."""
    seed(("openai", f"my key is {CANARY_KEY}"))
    exported = tmp_path / "recorded.jsonl"
    assert run_cli("cache", "export", "-o", str(exported)).returncode == 0
    elsewhere = {**fresh_home(tmp_path), "OPENAI_API_KEY": CANARY_KEY}
    config = tmp_path / "config.toml"
    config.write_text(
        '[targets.openai]\nurl = "https://api.openai.com"\nkey = { env = "OPENAI_API_KEY" }\n'
        'headers = { Authorization = "Bearer {key}" }\n'
    )
    result = run_cli("cache", "import", str(exported), "--config", str(config), env=elsewhere)
    assert result.returncode == 1
    assert "line 1: " in result.stderr
    assert "key TrayProxy sends" in result.stderr
    assert CANARY_KEY not in result.stderr + result.stdout
    assert run_cli("cache", "stats", env=elsewhere).stdout.startswith("No recorded answers")


def test_clear_takes_one_targets_answers_or_all_while_another_process_holds_the_file() -> None:
    seed(("openai", "one"), ("anthropic", "two"), ("openai", "three"))
    with RecordingStore.open() as running:  # as a running TrayProxy holds it
        result = run_cli("cache", "clear", "--target", "openai")
        assert (result.returncode, result.stdout) == (0, "Cleared 2 recorded answers of openai.\n")
        assert [item.target for item in running.stats().targets] == ["anthropic"]
        unknown = run_cli("cache", "clear", "--target", "opnai")
        assert unknown.stdout == "No recorded answers of opnai to clear (recorded: anthropic).\n"
        result = run_cli("cache", "clear")
        assert result.stdout == "Cleared 1 recorded answer.\n"
        assert running.stats().entries == 0


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`trayproxy cache stats | head -1` ended in a BrokenPipeError traceback (attacker trial)."""
    seed(("openai", "one"))
    done = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -m desktop cache stats | true"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr
