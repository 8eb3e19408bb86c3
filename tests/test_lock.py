"""The lock (.ci/constraints.txt) pins what the tests, CI and the bundle run with; it must
cover every dependency pyproject.toml declares, within its range, or pip silently takes
whatever is newest for the one it lacks (what broke a fresh install with tomlkit 0.15)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / ".ci" / "constraints.txt"
REFRESH = "uv pip compile pyproject.toml --universal --python-version 3.11 --extra test --extra build --extra uvloop -o .ci/constraints.txt"

# The platforms the release workflow builds on, as markers see them.
PLATFORMS = {
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    "darwin": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    "win32": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
}


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(extra)
    return [Requirement(text) for text in texts]


def _locked() -> dict[str, list[tuple[Version, Marker | None]]]:
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(specifier.version), requirement.marker)
        )
    return pins


def _environment(platform: str) -> dict[str, str]:
    return {"python_version": "3.11", "python_full_version": "3.11.7", **PLATFORMS[platform]}


def test_the_lock_says_how_it_was_made() -> None:
    assert REFRESH in LOCK.read_text(encoding="utf-8")
    assert REFRESH in (REPO / "README.md").read_text(encoding="utf-8"), "the README gives the refresh command"


def test_every_declared_dependency_is_locked_within_its_range_on_every_platform() -> None:
    pins = _locked()
    problems = []
    for requirement in _declared():
        for platform in PLATFORMS:
            environment = _environment(platform)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            versions = [
                version
                for version, marker in pins.get(canonicalize_name(requirement.name), [])
                if marker is None or marker.evaluate(environment)
            ]
            if not versions:
                problems.append(f"{requirement} is not in the lock for {platform}")
            problems.extend(
                f"{requirement} is locked at {version} for {platform}, outside its range"
                for version in versions
                if not requirement.specifier.contains(version, prereleases=True)
            )
    assert not problems, "refresh the lock with: " + REFRESH + "\n" + "\n".join(problems)


def test_the_commands_that_install_for_tests_and_bundles_use_the_lock() -> None:
    uses = "-c .ci/constraints.txt"
    assert uses in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert uses in (REPO / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    test_commands = [line for line in readme.splitlines() if "-m pytest" in line and "pip install" in line]
    assert test_commands, "the README has a test command"
    assert all(uses in line for line in test_commands), test_commands
