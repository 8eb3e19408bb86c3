"""The CI size check (tests/bundle_size.py) fails a bundle over its limit and names what is big.

Run on fake bundle folders of a few MiB with the limit scaled down, as ``.ci/run`` runs it on
dist/TrayProxy with the real one (80 MiB).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("bundle_size.py")
KIB = 1024
MIB = 1024 * KIB


def write(path: Path, size: int) -> None:
    """A file of ``size`` bytes that really takes them on disk (no holes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x01" * size)


def fake_bundle(root: Path) -> Path:
    """A PyInstaller-shaped folder: the executable beside ``_internal`` with most of the bytes."""
    write(root / "TrayProxy", 300 * KIB)
    write(root / "_internal" / "libbig.so", 1200 * KIB)
    write(root / "_internal" / "grown" / "_core.so", 700 * KIB)
    write(root / "_internal" / "grown" / "__init__.py", 100 * KIB)
    for index in range(12):
        write(root / "_internal" / f"small{index:02}.so", 8 * KIB)
    return root


def run_check(bundle: Path, limit_mib: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), "--limit-mib", str(limit_mib)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bundle_over_the_limit_fails_and_lists_its_ten_largest_entries(tmp_path: Path) -> None:
    """2.4 MiB against a 2 MiB limit: exit 1, and the list names the library and the package that
    take the room (the package as one entry, its files summed), largest first."""
    bundle = fake_bundle(tmp_path / "TrayProxy")
    result = run_check(bundle, 2)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "over the 2 MiB limit" in lines[0]
    listed = [line.split()[-1] for line in lines[2:]]
    assert listed[:3] == ["_internal/libbig.so", "_internal/grown", "TrayProxy"]
    assert len(listed) == 10


def test_a_bundle_within_the_limit_passes(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path / "TrayProxy")
    result = run_check(bundle, 3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "within the 3 MiB limit" in result.stdout
    assert "largest" not in result.stdout


def test_hard_links_count_once_as_du_counts_them(tmp_path: Path) -> None:
    """A library linked under a second name takes no more disk: 2.4 MiB stays within 2.5."""
    bundle = fake_bundle(tmp_path / "TrayProxy")
    os.link(bundle / "_internal" / "libbig.so", bundle / "_internal" / "libbig.so.1")
    assert run_check(bundle, 2.5).returncode == 0


def test_a_missing_bundle_is_an_error_not_a_pass(tmp_path: Path) -> None:
    result = run_check(tmp_path / "dist" / "TrayProxy", 80)
    assert result.returncode == 2
    assert "build it first" in result.stderr
