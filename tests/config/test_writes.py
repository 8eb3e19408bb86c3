"""Writes by the app to the config file: only the changed line differs, comments and layout stay,
a backup keeps the previous contents, and a killed writer never leaves a broken file."""

from __future__ import annotations

import difflib
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from desktop.atomicfile import STALE_TEMP_AGE_S
from desktop.config.parse import ConfigError
from desktop.config.store import (
    backup_path,
    edit_config,
    ensure_config,
    load_config,
    set_active_target,
    set_cache_mode,
    set_key_source,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITE_LOOP = Path(__file__).with_name("write_loop.py")
posix_only = pytest.mark.skipif(os.name != "posix", reason="permission bits are a POSIX notion")

# A file people write by hand: comments everywhere, blank lines, both quote styles, a key order
# that is not alphabetical, a trailing comment on the lines the app changes.
HANDWRITTEN = """\
# my TrayProxy setup -- do not lose these notes

active = 'work'   # switched from the tray


[listen]
port = 8000
hosts = [ "127.0.0.1" ]   # v4 only on this laptop

[targets.work]
# the company gateway
url = "https://llm.corp.example/v1"
headers = { 'X-Team' = "infra", Authorization = "Bearer {key}" }
key = { env = 'WORK_API_KEY' }  # set in ~/.profile

[targets.home]
url = "https://api.openai.com"

  # indented notes that lead into the next section
[targets.local]
url = "http://127.0.0.1:11434"
"""


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The config folder alone (conftest puts the test's HOME in tmp_path too)."""
    path = tmp_path / "TrayProxy"
    path.mkdir()
    return path


def _changed_lines(before: str, after: str) -> list[str]:
    """The lines difflib reports as removed or added, in order."""
    return [
        line
        for line in difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True))
        if line.startswith(("- ", "+ "))
    ]


def _strays(folder: Path) -> list[str]:
    """Files in ``folder`` other than the config and its backup (temporaries of a write)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in ("config.toml", "config.toml.bak"))


def test_switching_target_changes_only_the_active_line(folder: Path) -> None:
    """Choosing another target in the tray rewrites one line; the person's comments, blank
    lines, key order, quote style and trailing comment all stay."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    set_active_target(path, "home")
    after = path.read_text(encoding="utf-8")
    assert _changed_lines(HANDWRITTEN, after) == [
        "- active = 'work'   # switched from the tray\n",
        "+ active = 'home'   # switched from the tray\n",
    ]
    assert load_config(path).active == "home"


def test_setting_a_key_source_replaces_only_the_key_line(folder: Path) -> None:
    """After `trayproxy config set-key work`, only the target's key line changes, keeping its
    place after headers and its trailing comment."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    set_key_source(path, "work", {"keyring": True})
    assert _changed_lines(HANDWRITTEN, path.read_text(encoding="utf-8")) == [
        "- key = { env = 'WORK_API_KEY' }  # set in ~/.profile\n",
        "+ key = { keyring = true }  # set in ~/.profile\n",
    ]
    assert load_config(path).targets["work"].key_source == ("keyring", True)


def test_a_new_key_line_goes_right_after_the_url(folder: Path) -> None:
    """A target without a key gets its key line under its url, not after the comments that
    introduce the next section (where tomlkit would append it)."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    set_key_source(path, "home", {"env": "HOME_OPENAI_KEY"})
    after = path.read_text(encoding="utf-8")
    assert _changed_lines(HANDWRITTEN, after) == ['+ key = { env = "HOME_OPENAI_KEY" }\n']
    assert 'url = "https://api.openai.com"\nkey = { env = "HOME_OPENAI_KEY" }\n\n  # indented' in after
    assert load_config(path).targets["home"].key_source == ("env", "HOME_OPENAI_KEY")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            '[targets.home]\nurl = "https://api.openai.com"',
            '[targets.home]\nurl = "https://api.openai.com"\nkey = { env = "K" }',
            id="url-on-the-last-line-without-a-line-break",
        ),
        pytest.param(
            '[targets.home]\n\turl = "https://a.test"  # mine\n\t# port next\n\tport = 9001\n[targets.b]\nurl = "https://b.test"\n',
            '[targets.home]\n\turl = "https://a.test"  # mine\n\tkey = { env = "K" }\n\t# port next\n'
            '\tport = 9001\n[targets.b]\nurl = "https://b.test"\n',
            id="indented-with-a-comment-after-the-url",
        ),
        pytest.param(
            'targets.home.url = "https://a.test"\ntargets.home.port = 9001\n',
            'targets.home.url = "https://a.test"\ntargets.home.key = { env = "K" }\ntargets.home.port = 9001\n',
            id="dotted-keys",
        ),
    ],
)
def test_a_new_key_line_follows_the_url_in_any_layout(folder: Path, before: str, after: str) -> None:
    """`trayproxy config set-key` on a target without a key line adds exactly that line, under
    the url and written like its neighbours, whatever the file looks like."""
    path = _write(folder / "config.toml", before)
    set_key_source(path, "home", {"env": "K"})
    assert path.read_text(encoding="utf-8") == after
    assert load_config(path).targets["home"].key_source == ("env", "K")


def test_the_cache_menu_writes_one_line_under_the_url_then_changes_only_it(folder: Path) -> None:
    """The tray's Cache menu on a target without a cache line adds one under its url (not after
    the comments leading into the next section); a second choice rewrites that line alone,
    keeping its quote style and trailing comment; "off" on a target with no line, or the mode
    already written (in any case), writes nothing."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    set_cache_mode(path, "home", "replay")
    added = path.read_text(encoding="utf-8")
    assert _changed_lines(HANDWRITTEN, added) == ['+ cache = "replay"\n']
    assert 'url = "https://api.openai.com"\ncache = "replay"\n\n  # indented' in added
    assert load_config(path).targets["home"].cache == "replay"

    commented = added.replace('cache = "replay"', "cache = 'Replay'  # for the evals")
    _write(path, commented)
    set_cache_mode(path, "home", "offline")
    assert _changed_lines(commented, path.read_text(encoding="utf-8")) == [
        "- cache = 'Replay'  # for the evals\n",
        "+ cache = 'offline'  # for the evals\n",
    ]
    assert load_config(path).targets["home"].cache == "offline"

    _write(path, commented)
    old = path.stat()
    set_cache_mode(path, "home", "replay")
    set_cache_mode(path, "local", "off")
    new = path.stat()
    assert (new.st_ino, new.st_mtime_ns) == (old.st_ino, old.st_mtime_ns)
    assert path.read_text(encoding="utf-8") == commented


def test_an_unknown_cache_mode_or_target_writes_nothing(folder: Path) -> None:
    path = _write(folder / "config.toml", HANDWRITTEN)
    with pytest.raises(ValueError, match="a cache mode is one of off, record, replay, offline, not 'always'"):
        set_cache_mode(path, "home", "always")
    with pytest.raises(ValueError, match=r"no target 'hom' .*\(did you mean 'home'\?\)"):
        set_cache_mode(path, "hom", "replay")
    assert path.read_bytes() == HANDWRITTEN.encode()
    assert not backup_path(path).exists()


def test_the_default_config_keeps_every_comment_through_a_switch(folder: Path) -> None:
    """The first-run file, switched to Anthropic and given a keychain key for Ollama, differs
    from the original by exactly those two lines."""
    path = folder / "first-run" / "config.toml"
    ensure_config(path)
    original = path.read_text(encoding="utf-8")
    set_active_target(path, "anthropic")
    set_key_source(path, "ollama", {"keyring": True})
    assert _changed_lines(original, path.read_text(encoding="utf-8")) == [
        '- active = "openai"\n',
        '+ active = "anthropic"\n',
        "+ key = { keyring = true }\n",
    ]


def test_windows_line_endings_stay_on_every_line(folder: Path) -> None:
    """A file saved with CRLF endings keeps them, on the changed and the added lines too, so
    the whole file does not show as changed in the person's dotfiles repository."""
    path = _write(folder / "config.toml", HANDWRITTEN.replace("\n", "\r\n"))
    set_active_target(path, "local")
    set_key_source(path, "local", {"env": "LOCAL_KEY"})
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    assert b'\r\nkey = { env = "LOCAL_KEY" }\r\n' in data
    assert load_config(path).active == "local"


def test_backup_holds_the_contents_before_the_last_write(folder: Path) -> None:
    """config.toml.bak next to the file is what the file held before the app's last change,
    so one switch too many can be undone by hand."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    set_active_target(path, "home")
    assert backup_path(path).read_text(encoding="utf-8") == HANDWRITTEN
    before_second = path.read_text(encoding="utf-8")
    set_active_target(path, "local")
    assert backup_path(path).read_text(encoding="utf-8") == before_second
    assert _strays(folder) == []


def test_setting_the_current_value_writes_nothing(folder: Path) -> None:
    """Picking the target that is already active, or storing the key source already set,
    leaves the file alone: same inode and mtime, no backup appears."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    old = path.stat()
    set_active_target(path, "work")
    set_key_source(path, "work", {"env": "WORK_API_KEY"})
    edit_config(path, lambda doc: None)
    new = path.stat()
    assert (new.st_ino, new.st_mtime_ns) == (old.st_ino, old.st_mtime_ns)
    assert not backup_path(path).exists()
    assert _strays(folder) == []


def test_an_edit_that_would_break_the_file_raises_and_writes_nothing(folder: Path) -> None:
    """A change whose result the checker refuses raises ConfigError naming the problem, and
    the file stays byte for byte as it was, with no backup or temporary left."""
    path = _write(folder / "config.toml", HANDWRITTEN)

    def bad_port(doc: tomlkit.TOMLDocument) -> None:
        doc["listen"]["port"] = 70000

    with pytest.raises(ConfigError, match="port 70000 is not between 0 and 65535"):
        edit_config(path, bad_port)
    with pytest.raises(ConfigError, match="key env must be a non-empty string"):
        set_key_source(path, "work", {"env": ""})
    assert path.read_bytes() == HANDWRITTEN.encode()
    assert _strays(folder) == []
    assert not backup_path(path).exists()


def test_unknown_target_is_a_value_error_with_a_suggestion(folder: Path) -> None:
    """Asking for a target that is not in the file (or is commented out) says which exist and
    leaves the file alone."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    with pytest.raises(
        ValueError, match=r"there is no target 'hom' in .*config\.toml \(did you mean 'home'\?\)"
    ):
        set_active_target(path, "hom")
    with pytest.raises(ValueError, match=r"no target 'azure' .*\(targets: work, home, local\)"):
        set_key_source(path, "azure", {"keyring": True})
    with pytest.raises(ValueError, match="a key source is one of env, keyring, command, value"):
        set_key_source(path, "work", {"keychain": True})
    assert path.read_bytes() == HANDWRITTEN.encode()


def test_a_file_with_mistakes_is_not_edited(folder: Path) -> None:
    """If the person's file already has a mistake, the app does not write over it: the error
    names the line and the file is unchanged."""
    broken = HANDWRITTEN.replace("port = 8000", "port = 8000x")
    path = _write(folder / "config.toml", broken)
    with pytest.raises(ConfigError, match=r"config\.toml:7:"):
        set_active_target(path, "home")
    assert path.read_bytes() == broken.encode()


def test_an_editor_save_during_a_write_is_kept(folder: Path) -> None:
    """When the person saves the file in their editor while the tray is switching target, the
    switch is applied on top of their save: both changes are in the file."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    edited = HANDWRITTEN.replace("port = 8000", "port = 8111  # just saved in the editor")
    calls: list[object] = []

    def switch_while_editor_saves(doc: tomlkit.TOMLDocument) -> None:
        calls.append(doc["active"])
        if len(calls) == 1:
            _write(path, edited)  # the editor saves after the app has read the file
        doc["active"] = "local"

    edit_config(path, switch_while_editor_saves)
    assert len(calls) == 2
    after = path.read_text(encoding="utf-8")
    assert "port = 8111  # just saved in the editor" in after
    assert load_config(path).active == "local"
    assert backup_path(path).read_text(encoding="utf-8") == edited


def test_a_file_that_keeps_changing_is_left_to_its_writer(folder: Path) -> None:
    """If something rewrites the file on every attempt, the app gives up with a clear error and
    the file holds that writer's last version, not the app's."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    saves: list[str] = []

    def switch_while_someone_saves_each_time(doc: tomlkit.TOMLDocument) -> None:
        saves.append(HANDWRITTEN.replace("port = 8000", f"port = {8100 + len(saves)}"))
        _write(path, saves[-1])
        doc["active"] = "local"

    with pytest.raises(ConfigError, match="kept changing while TrayProxy was saving it; nothing was saved"):
        edit_config(path, switch_while_someone_saves_each_time)
    assert path.read_text(encoding="utf-8") == saves[-1]
    assert _strays(folder) == []


def test_a_broken_save_during_a_write_is_not_overwritten(folder: Path) -> None:
    """A half-typed save that does not parse is the person's to fix: the app reports it and
    does not replace it with its own version."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    half_typed = HANDWRITTEN.replace("port = 8000", "port = ")

    def switch_while_a_broken_save_lands(doc: tomlkit.TOMLDocument) -> None:
        _write(path, half_typed)
        doc["active"] = "local"

    with pytest.raises(ConfigError, match="not valid TOML"):
        edit_config(path, switch_while_a_broken_save_lands)
    assert path.read_text(encoding="utf-8") == half_typed


# Target names as people might spell them: dots, spaces, quotes and accents need quoting in TOML.
_NAMES = st.text(alphabet="abcxyz019-_. 'é\"", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(_NAMES, min_size=2, max_size=4, unique=True), literal=st.booleans(), pick=st.integers(0, 3)
)
def test_any_target_name_switches_with_a_one_line_change(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], literal: bool, pick: int
) -> None:
    """Whatever a target is called, switching to it changes only the active line and the file
    then says that target is active."""
    folder = tmp_path_factory.mktemp("names")
    active = tomlkit.string(names[0], literal=literal and "'" not in names[0]).as_string()
    text = f"# names\nactive = {active}  # keep me\n" + "".join(
        f'\n[targets.{tomlkit.key(name).as_string()}]\nurl = "http://127.0.0.1:{port}"\n'
        for port, name in enumerate(names, start=1024)
    )
    path = _write(folder / "config.toml", text)
    chosen = names[pick % len(names)]
    set_active_target(path, chosen)
    after = path.read_text(encoding="utf-8")
    changed = _changed_lines(text, after)
    assert len(changed) == (0 if chosen == names[0] else 2)
    assert all(line[2:].startswith("active = ") and line.endswith("  # keep me\n") for line in changed)
    assert load_config(path).active == chosen


@posix_only
def test_permission_bits_are_kept(folder: Path) -> None:
    """A config the person made group-readable stays so after the app writes it, and its
    backup gets the same bits; a new file is owner-only."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    path.chmod(0o640)
    set_active_target(path, "home")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(backup_path(path).stat().st_mode) == 0o640
    fresh = folder / "fresh" / "config.toml"
    ensure_config(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


@posix_only
def test_a_file_holding_a_key_becomes_owner_only(folder: Path) -> None:
    """When the file (or its backup) holds a key written in it, the app's write leaves it
    readable by the owner only, whatever bits it had."""
    secret = "tpinfile-0123456789abcdef"
    text = HANDWRITTEN.replace("key = { env = 'WORK_API_KEY' }", f'key = "{secret}"')
    path = _write(folder / "config.toml", text)
    path.chmod(0o644)
    set_active_target(path, "home")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(backup_path(path).stat().st_mode) == 0o600


def test_moving_a_key_out_of_the_file_leaves_no_copy_behind(folder: Path) -> None:
    """After the key written in the file is moved to the keychain, no file in the config
    folder still holds it: no backup is kept for that write, an older one is removed, and the
    error messages of later edits never show it."""
    secret = "tpinfile-0123456789abcdef"
    text = HANDWRITTEN.replace("key = { env = 'WORK_API_KEY' }", f'key = "{secret}"')
    path = _write(folder / "config.toml", text)
    set_active_target(path, "home")
    assert secret in backup_path(path).read_text(encoding="utf-8")
    set_key_source(path, "work", {"keyring": True})
    assert load_config(path).targets["work"].key_source == ("keyring", True)
    for leftover in folder.iterdir():
        assert secret not in leftover.read_text(encoding="utf-8"), leftover.name
    assert not backup_path(path).exists()


@pytest.mark.skipif(os.name != "posix", reason="symlinks need privileges on Windows")
def test_a_symlinked_config_stays_a_link(folder: Path) -> None:
    """A config kept in a dotfiles repository and linked into place is updated through the
    link; the link itself is not replaced by a plain file."""
    (folder / "dotfiles").mkdir()
    real = _write(folder / "dotfiles" / "trayproxy.toml", HANDWRITTEN)
    link = folder / "config" / "config.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    set_active_target(link, "local")
    assert link.is_symlink()
    assert load_config(real).active == "local"
    assert backup_path(link).read_text(encoding="utf-8") == HANDWRITTEN


def test_old_temporaries_are_removed_by_the_next_write_and_fresh_ones_kept(folder: Path) -> None:
    """A temporary left by a writer killed long ago is ignored when the file is read and
    removed by the next write; one young enough to belong to a writer still running in another
    process is left alone, so that writer's rename still works."""
    path = _write(folder / "config.toml", HANDWRITTEN)
    stale = _write(folder / ".config.toml.k1ll3d.tmp", HANDWRITTEN[:100])
    stale_backup = _write(folder / ".config.toml.bak.k1ll3d.tmp", HANDWRITTEN[:50])
    long_ago = time.time() - 2 * STALE_TEMP_AGE_S
    for temporary in (stale, stale_backup):
        os.utime(temporary, (long_ago, long_ago))
    young = _write(folder / ".config.toml.wr1t1ng.tmp", HANDWRITTEN[:200])
    assert load_config(path).active == "work"
    set_active_target(path, "home")
    assert _strays(folder) == [young.name]


# The kill test. Two versions of a ~100 KiB file that differ in one line; a writer process
# switches between them in a loop and is killed at random moments.
KILL_ROUNDS = 30
# One round in three kills at a random moment of the writer's life (mostly tomlkit parsing);
# the others wait for the start of a write's critical part and kill shortly after.
RANDOM_ROUND_EVERY = 3
RANDOM_KILL_MAX_S = 0.25
# Here the critical part of one write (two temporaries, two renames, fsyncs) takes 1-3 ms.
AIMED_KILL_MAX_S = 0.004
# Which announced temporary of the first write to aim at: 1 is the new file, 2 the backup.
AIMED_TEMPORARY_MAX = 2
CONFIG_TARGET_BYTES = 100 * 1024


def _big_config(active: str) -> bytes:
    parts = [f'# generated for the kill test\nactive = "{active}"\n']
    size = len(parts[0])
    number = 0
    while size < CONFIG_TARGET_BYTES:
        part = (
            f"\n# target {number}: a comment as long as the ones people leave for themselves\n"
            f"[targets.t{number}]\n"
            f'url = "http://127.0.0.1:{1024 + number}/v1"\n'
            f'key = {{ env = "T{number}_API_KEY" }}\n'
            f'headers = {{ Authorization = "Bearer {{key}}" }}\n'
        )
        parts.append(part)
        size += len(part)
        number += 1
    parts.append(
        '\n[targets.alpha]\nurl = "http://127.0.0.1:1"\n\n[targets.beta]\nurl = "http://127.0.0.1:2"\n'
    )
    return "".join(parts).encode("utf-8")


def _read_announcements(process: subprocess.Popen[bytes], count: int) -> None:
    assert process.stdout is not None
    for _ in range(count):
        if not os.read(process.stdout.fileno(), 1):
            process.wait()
            assert process.stderr is not None
            pytest.fail(f"the writer stopped by itself:\n{process.stderr.read().decode()}")


def test_a_writer_killed_at_any_moment_leaves_the_old_or_the_new_file(folder: Path) -> None:
    """Killing TrayProxy while it saves the config (logout, crash, kill -9) never leaves a
    broken or half-written file: after each of many kills the file parses and is exactly the
    version before or after the switch, and so is its backup."""
    versions = {"alpha": _big_config("alpha"), "beta": _big_config("beta")}
    assert len(versions["alpha"]) >= CONFIG_TARGET_BYTES
    path = folder / "config.toml"
    path.write_bytes(versions["alpha"])
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    switches = 0
    for round_number in range(KILL_ROUNDS):
        current = "alpha" if path.read_bytes() == versions["alpha"] else "beta"
        other = "beta" if current == "alpha" else "alpha"
        process = subprocess.Popen(
            [sys.executable, str(WRITE_LOOP), str(path), other, current],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            if round_number % RANDOM_ROUND_EVERY == 0:
                time.sleep(rng.uniform(0, RANDOM_KILL_MAX_S))
            else:
                _read_announcements(process, rng.randint(1, AIMED_TEMPORARY_MAX))
                time.sleep(rng.uniform(0, AIMED_KILL_MAX_S))
        finally:
            process.kill()
            process.wait()
            assert process.stdout is not None
            assert process.stderr is not None
            process.stdout.close()
            errors = process.stderr.read().decode()
            process.stderr.close()
        killed = -signal.SIGKILL if os.name == "posix" else 1
        assert process.returncode == killed, f"seed {seed}: the writer failed by itself:\n{errors}"
        content = path.read_bytes()
        if content not in versions.values():
            pytest.fail(
                f"seed {seed}, round {round_number}: the file ({len(content)} bytes) is neither version"
            )
        switches += content != versions[current]
        load_config(path)
        backup = backup_path(path)
        if backup.exists() and backup.read_bytes() not in versions.values():
            pytest.fail(f"seed {seed}, round {round_number}: the backup is neither version")
        for stray in _strays(folder):
            # Temporaries of the file (.config.toml.XXXX.tmp) or of its backup (.config.toml.bak.XXXX.tmp).
            assert stray.startswith(".config.toml."), stray
            assert stray.endswith(".tmp"), stray
    # The kills must have hit writes in progress, or the test proved nothing.
    assert switches > 0, f"seed {seed}: no round completed a switch"
    assert _strays(folder), f"seed {seed}: no kill landed inside a write"
