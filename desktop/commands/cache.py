"""``trayproxy cache stats|clear|export|import``: the recorded answers on disk, for a person.

Run by ``desktop.cli`` (which holds the parser and the help) for the ``cache`` command only.
Each action opens the recording itself (``desktop.cache``'s synchronous API), beside a running
TrayProxy if there is one: SQLite lets the two take turns. The config file is read for the cap
(``[cache] max_mib``) and, before an import, for the keys TrayProxy sends, so that a recording
holding one is refused (redaction.register_secrets). Nothing here imports the engine or the tray.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from desktop.cache import RecordingStore, StoreStats
    from desktop.config.parse import ConfigFile

__all__ = ["run_cache"]

MIB = 1024 * 1024
# What a name given as a file means: standard output (export) or standard input (import).
STDIO = "-"


class CacheCommandError(Exception):
    """What went wrong, worded for the person who typed the command."""


def run_cache(args: argparse.Namespace) -> int:
    """Run the ``cache`` action ``args`` names; return the exit status."""
    from desktop.cache import StoreError

    actions = {"stats": _stats, "clear": _clear, "export": _export, "import": _import}
    try:
        status = actions[args.cache_command](args)
        sys.stdout.flush()  # a reader that left (`| head`) is met here, not in a traceback at exit
        return status
    except (CacheCommandError, StoreError) as exc:
        print(f"trayproxy cache {args.cache_command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Say nothing more, as other tools do; the interpreter's own flush at exit must not
        # fail on the closed pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# -- the actions ------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    """How many answers are recorded, how much room they take against the cap, per target,
    from when to when, and where the file is."""
    from desktop.cache import default_store_path

    cap_text = _cap_text(args)
    path = default_store_path()
    if not path.exists():
        print(f"No recorded answers yet (cap {cap_text}).")
        print(f"They are kept in {path} once a target's cache mode is record or replay.")
        return 0
    with _opened() as store:
        stats = store.stats()
    print(*_stats_lines(stats, cap_text), sep="\n")
    return 0


def _stats_lines(stats: StoreStats, cap_text: str) -> list[str]:
    if not stats.entries:
        lines = [f"No recorded answers (cap {cap_text})."]
    else:
        lines = [f"{_answers(stats.entries)}, {_mib(stats.bytes)} (cap {cap_text})."]
        width = max(len(target.target) for target in stats.targets)
        lines += [
            f"  {target.target:<{width}}  {_answers(target.entries)}, {_mib(target.bytes)}"
            for target in stats.targets
        ]
        if stats.oldest is not None and stats.newest is not None:
            lines.append(f"Recorded from {_when(stats.oldest)} to {_when(stats.newest)}.")
    lines.append(f"File: {stats.path} ({_mib(stats.file_bytes)} on disk)")
    return lines


def _clear(args: argparse.Namespace) -> int:
    """Delete every recorded answer, or those of one target."""
    from desktop.cache import default_store_path

    target: str | None = args.target
    if not default_store_path().exists():
        print("No recorded answers to clear.")
        return 0
    with _opened() as store:
        known = [item.target for item in store.stats().targets]
        removed = store.clear(target)
    if target is None:
        print(f"Cleared {_answers(removed)}." if removed else "No recorded answers to clear.")
    elif removed:
        print(f"Cleared {_answers(removed)} of {target}.")
    else:
        print(f"No recorded answers of {target} to clear{_recorded_targets(known)}.")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Write the recorded answers (of one target) as JSON lines, to a file or standard output."""
    from desktop.cache import default_store_path, export_to

    target: str | None = args.target
    output: str = args.output
    to_stdout = output == STDIO
    if not default_store_path().exists():
        count, known = 0, []
        if not to_stdout:
            with _written_atomically(Path(output)):
                pass  # an empty file: an empty recording, as asked
    else:
        with _opened() as store:
            known = [item.target for item in store.stats().targets]
            if to_stdout:
                try:
                    count = export_to(store, sys.stdout, target)
                    sys.stdout.flush()
                except BrokenPipeError:
                    # The reader left (`| head`): say nothing more, as other tools do; the
                    # interpreter's own flush at exit must not fail on the closed pipe either.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    return 1
            else:
                with _written_atomically(Path(output)) as stream:
                    count = export_to(store, stream, target)
    whose = f" of {target}" if target else ""
    where = "" if to_stdout else f" to {output}"
    if count:
        print(f"Exported {_answers(count)}{whose}{where}.", file=sys.stderr)
        print("It holds the prompts and the answers (never keys): share it as you would them.", file=sys.stderr)
    else:
        print(f"No recorded answers{whose} to export{_recorded_targets(known) if target else ''};"
              f" wrote none{where}.", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    """Check every line of an export, then add its answers to the recording (none if a line is bad)."""
    from desktop.cache import default_store_path

    source: str = args.file
    name = "standard input" if source == STDIO else source
    config = _config(args)
    _register_keys(config)
    cap_bytes = _cap_mib(config) * MIB
    made_here = not default_store_path().exists()
    try:
        count, path, dropped = _import_into_store(source, name, cap_bytes)
    except CacheCommandError:
        if made_here:  # a refused import leaves the home as it found it, not with an empty file
            _remove_store(default_store_path())
        raise
    print(f"Imported {_answers(count)} from {name} into {path}.")
    if dropped:
        # Said, not silent: a recording bigger than the cap would otherwise be exported or
        # replayed short without a sign.
        print(
            f"The cap ({_cap_mib(config)} MiB, [cache] max_mib) is full: {_answers(dropped)} used least"
            " recently were dropped to make room (imported ones among them when the file alone"
            " is over the cap); trayproxy cache stats shows what is kept.",
            file=sys.stderr,
        )
    return 0


def _import_into_store(source: str, name: str, cap_bytes: int) -> tuple[int, Path, int]:
    """How many answers ``source`` added, the store's file, and how many answers the cap
    dropped meanwhile; CacheCommandError when none were added."""
    from desktop.cache import RecordingFormatError, import_from

    with _opened() as store:
        try:
            if source == STDIO:
                count = import_from(store, sys.stdin.buffer, max_bytes=cap_bytes)
            else:
                count = import_from(store, Path(source), max_bytes=cap_bytes)
        except RecordingFormatError as exc:
            raise CacheCommandError(f"{name}: line {exc.line}: {exc.problem}; nothing was imported") from None
        except FileNotFoundError:
            raise CacheCommandError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise CacheCommandError(f"{name} is a folder; give the exported file") from None
        except OSError as exc:
            raise CacheCommandError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not count:  # a recipe that recorded nothing must not pass quietly until its tests get 504s
        raise CacheCommandError(f"{name} holds no recorded answers; nothing was imported")
    return count, store.path, store.evicted


def _remove_store(path: Path) -> None:
    """The store's file with its write-ahead log and shared-memory index (SQLite's -wal, -shm)."""
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _opened() -> Iterator[RecordingStore]:
    from desktop.cache import RecordingStore

    store = RecordingStore.open()
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _written_atomically(path: Path) -> Iterator[IO[str]]:
    """A text stream whose contents replace ``path`` once all is written (never half a file,
    nor an old one half overwritten, when the export fails midway)."""
    from desktop.atomicfile import replace_durably

    target = path.expanduser()
    if target.is_dir():
        raise CacheCommandError(f"{path} is a folder; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise CacheCommandError(f"cannot write {path}: the folder {folder} does not exist")
    temporary = folder / f".{target.name}.{os.getpid()}.tmp"
    # It holds prompts and answers: owner-only unless the file it replaces was shared already.
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o600
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(descriptor, "w", encoding="ascii", newline="\n") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        replace_durably(temporary, target)
    except OSError as exc:
        raise CacheCommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _config(args: argparse.Namespace) -> ConfigFile | None:
    """The config file, None when there is none yet; a CacheCommandError when it has mistakes."""
    from desktop.config.parse import ConfigError
    from desktop.config.store import config_path, load_config

    path = config_path(args.config)
    if not path.exists():
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CacheCommandError(
            f"the config file has problems, so its cap and keys are not known; fix it first:\n{exc}"
        ) from None


def _cap_mib(config: ConfigFile | None) -> int:
    from desktop.config.model import Recording

    return (config.cache if config is not None else Recording()).max_mib


def _cap_text(args: argparse.Namespace) -> str:
    """``1024 MiB``, the cap the config file gives; said so when the file cannot tell."""
    try:
        return f"{_cap_mib(_config(args))} MiB"
    except CacheCommandError:
        return f"{_cap_mib(None)} MiB unless the config file, which has problems, says otherwise"


def _register_keys(config: ConfigFile | None) -> None:
    """Make the keys the config's targets send known to the redactor, so an import holding one
    is refused. Reading a key runs its command, as starting TrayProxy does."""
    from desktop.config.keys import resolve_target
    from desktop.redaction import register_secrets, url_secrets

    for spec in config.targets.values() if config is not None else ():
        target = resolve_target(spec).target
        register_secrets((*target.secrets(), *url_secrets(target.url)))


def _answers(count: int) -> str:
    return f"{count} recorded answer" + ("" if count == 1 else "s")


def _mib(size: int) -> str:
    """A size as a person reads it: ``812 bytes``, ``4.2 KiB``, ``3.1 MiB``."""
    if size < 1024:
        return f"{size} bytes"
    if size < MIB:
        return f"{size / 1024:.1f} KiB"
    return f"{size / MIB:.1f} MiB"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _recorded_targets(known: list[str]) -> str:
    return f" (recorded: {', '.join(known)})" if known else " (none are recorded)"
