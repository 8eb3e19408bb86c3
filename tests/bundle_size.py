"""Fail when the built app folder is over its size limit, and say what is big in it.

    python tests/bundle_size.py dist/TrayProxy [--limit-mib 80]

The size is what ``du -sm`` reports: the blocks the files and folders take on disk, a file
with several hard links counted once. Over the limit it prints the ten largest entries and
exits 1. An entry is a file or folder of the bundle, with a folder that holds more than half
of its parent (PyInstaller's ``_internal``) opened up into its own entries, so the list names
the package or library that grew (``_internal/cryptography``), not the folder everything is in.
``.ci/run`` runs it after building with build.spec; tests/test_bundle_size.py tests it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MIB = 1024 * 1024
# The Linux bundle was 69 MiB when this limit was set (issue 12, section 7); a dependency that
# adds a compiled library of several MiB is what it is there to catch.
DEFAULT_LIMIT_MIB = 80
LISTED_ENTRIES = 10
BLOCK_BYTES = 512  # the unit of st_blocks (POSIX), whatever the file system's block size


def disk_bytes(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes ``path`` (and, for a folder, all it holds) takes on disk; inodes in ``seen`` count 0."""
    info = path.lstat()
    inode = (info.st_dev, info.st_ino)
    total = 0
    if inode not in seen:
        seen.add(inode)
        total = info.st_blocks * BLOCK_BYTES
    if path.is_dir() and not path.is_symlink():
        with os.scandir(path) as entries:
            total += sum(disk_bytes(Path(entry.path), seen) for entry in entries)
    return total


def largest_entries(root: Path) -> list[tuple[int, str]]:
    """(bytes, path relative to ``root``) of every entry, largest first, with a folder that
    holds more than half of its parent replaced by its own entries."""
    found: list[tuple[int, str]] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        children = [(disk_bytes(child, set()), child) for child in sorted(folder.iterdir())]
        whole = sum(size for size, _ in children)
        for size, child in children:
            if child.is_dir() and not child.is_symlink() and size * 2 > whole:
                folders.append(child)
            else:
                found.append((size, child.relative_to(root).as_posix()))
    return sorted(found, reverse=True)


def check(root: Path, limit_mib: float) -> tuple[bool, str]:
    """(within the limit, the report to print)."""
    total = disk_bytes(root, set())
    within = total <= limit_mib * MIB
    verdict = "within" if within else "over"
    report = [f"bundle size: {total / MIB:.1f} MiB on disk ({root}), {verdict} the {limit_mib:g} MiB limit"]
    if not within:
        report.append(f"the {LISTED_ENTRIES} largest entries:")
        report += [f"  {size / MIB:7.2f} MiB  {name}" for size, name in largest_entries(root)[:LISTED_ENTRIES]]
    return within, "\n".join(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the app folder, e.g. dist/TrayProxy")
    parser.add_argument("--limit-mib", type=float, default=DEFAULT_LIMIT_MIB, help="default: %(default)s")
    args = parser.parse_args(argv)
    if not args.bundle.is_dir():
        parser.error(f"{args.bundle} is not a folder (build it first: pyinstaller build.spec)")
    within, report = check(args.bundle, args.limit_mib)
    print(report)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
