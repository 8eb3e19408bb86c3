"""The boundaries STYLE.md section 1 draws, checked so they stay drawn.

What a user would notice if they slipped: ``trayproxy serve`` failing on a server with no
display because something imported the tray; the frozen app importing our ``desktop/x.py``
instead of the standard library's ``x``; the engine growing file or UI dependencies that make it
impossible to run headless or test in isolation; a lint error reaching CI.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "desktop"
# GUI toolkits the headless path must not load: the tray's own modules, pystray and Pillow,
# and the backends pystray would pull in (GTK via gi, AppKit, Xlib) or that a stray import
# could (tkinter).
GUI_MODULES = ("pystray", "PIL", "desktop.tray", "gi", "AppKit", "Xlib", "tkinter")


def module_name(path: Path) -> str:
    """``desktop/engine/service.py`` -> ``desktop.engine.service``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def desktop_imports(path: Path) -> set[str]:
    """Every ``desktop`` module the file at ``path`` imports."""
    return imports_in_source(
        path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
    )


def imports_in_source(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every ``desktop`` module ``source`` (the text of ``module``) imports, anywhere in it
    (functions included).

    ``from desktop.config import model`` counts as ``desktop.config.model``; ``from desktop
    import __version__`` as ``desktop:__version__`` (a name, not a module).
    """
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "desktop")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                imported = ".".join(base + ([node.module] if node.module else []))
            else:
                imported = node.module or ""
            if imported.split(".")[0] != "desktop":
                continue
            for alias in node.names:
                submodule = f"{imported}.{alias.name}"
                found.add(submodule if is_package_module(submodule) else f"{imported}:{alias.name}")
    return found


def is_allowed(imported: str, allowed: tuple[str, ...]) -> bool:
    """``allowed`` holds exact names (``desktop.config.model``, ``desktop:__version__``) and
    subtrees (``desktop.engine.*``)."""
    module = imported.split(":")[0]
    for rule in allowed:
        if rule.endswith(".*"):
            if module == rule[:-2] or module.startswith(rule[:-1]):
                return True
        elif imported == rule or module == rule:
            return True
    return False


def test_headless_imports_leave_the_tray_and_gui_toolkits_unloaded() -> None:
    """``trayproxy serve`` runs on a machine with no display: importing the engine, the
    controller and the CLI (with every warning an error) loads no tray or GUI module."""
    code = (
        "import json, sys\n"
        "import desktop, desktop.engine, desktop.engine.service, desktop.controller, desktop.cli\n"
        f"gui = {GUI_MODULES!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == g or m.startswith(g + '.') for g in gui))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_no_module_in_desktop_shadows_the_standard_library() -> None:
    """Run as a script or frozen, ``desktop/`` itself is on the import path: a
    ``desktop/logging.py`` would replace the real ``logging`` for every library."""
    names = sorted(
        entry.stem if entry.is_file() else entry.name
        for entry in PACKAGE.iterdir()
        if (entry.is_file() and entry.suffix == ".py") or (entry / "__init__.py").is_file()
    )
    assert "cli" in names  # the listing itself works
    assert [name for name in names if name in sys.stdlib_module_names] == []


ENGINE_ALLOWED = ("desktop.config.model", "desktop.redaction", "desktop.engine.*", "desktop:__version__")


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "engine").rglob("*.py")),
    ids=lambda path: path.relative_to(PACKAGE).as_posix(),
)
def test_engine_imports_only_config_model_and_itself(path: Path) -> None:
    """The engine stays a headless library: no tray, CLI, controller, config files or keychain,
    only the configuration model handed to it, the redactor and its own modules."""
    assert sorted(i for i in desktop_imports(path) if not is_allowed(i, ENGINE_ALLOWED)) == []


# STYLE.md section 1, "One-way imports": what each existing lower layer may import.
LAYERS = {
    "desktop/config/model.py": ("desktop:__version__",),
    # logs formats through the redactor (row 1, a leaf module that imports nothing of ours),
    # so that one redaction serves the log handlers and the engine's error answers alike.
    "desktop/logs.py": (
        "desktop.config.model",
        "desktop.bundle",
        "desktop.redaction",
        "desktop:__version__",
    ),
    "desktop/controller.py": ("desktop.engine.*", "desktop.config.*", "desktop.redaction", "desktop:__version__"),
    "desktop/bundle.py": (),
    "desktop/redaction.py": (),
    "desktop/clients.py": (),
    **{
        f"desktop/platforms/{name}.py": ("desktop.bundle", "desktop.platforms", "desktop.platforms.*")
        for name in ("__init__", "linux", "macos", "windows", "instance", "secretservice_cipher", "dbus", "x11tray")
    },
    **{
        f"desktop/tray/{name}.py": (
            "desktop.controller",
            "desktop.config.model",
            "desktop.platforms",
            "desktop.platforms.*",  # tray/backend.py asks platforms.dbus and platforms.x11tray
            "desktop.bundle",
            "desktop.clients",
            "desktop.tray.*",
            "desktop:__version__",
        )
        for name in ("__init__", "app", "menu", "icons", "backend")
    },
}


@pytest.mark.parametrize(("relative", "allowed"), list(LAYERS.items()), ids=list(LAYERS))
def test_lower_layers_import_only_rows_above_their_own(relative: str, allowed: tuple[str, ...]) -> None:
    """Imports run one way (config.model <- logs <- engine <- controller <- tray/cli), so each
    layer can be tested and reused without the ones built on it."""
    path = REPO / relative
    assert path.is_file()
    assert sorted(i for i in desktop_imports(path) if not is_allowed(i, allowed)) == []


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "tray").glob("*.py")), ids=lambda path: path.relative_to(PACKAGE).as_posix()
)
def test_tray_never_touches_the_event_loop_or_the_http_library(path: Path) -> None:
    """The tray talks to the controller only: no asyncio, no aiohttp of its own (STYLE.md row 5)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert names.isdisjoint({"asyncio", "aiohttp"})


def test_import_checker_sees_relative_and_function_level_imports() -> None:
    """The checks above would pass vacuously if the parser missed an import form; it does not."""
    source = (
        "from __future__ import annotations\n"
        "from ..config import model\n"
        "from .. import cli\n"
        "from . import headers\n"
        "def later():\n"
        "    import desktop.controller\n"
        "    from desktop import __version__\n"
    )
    found = imports_in_source(source, "desktop.engine.probe")
    assert found == {
        "desktop.config.model",
        "desktop.cli",
        "desktop.engine.headers",
        "desktop.controller",
        "desktop:__version__",
    }
    assert sorted(i for i in found if not is_allowed(i, ENGINE_ALLOWED)) == [
        "desktop.cli",
        "desktop.controller",
    ]


def test_ruff_finds_nothing_in_desktop_and_tests() -> None:
    """The lint CI runs is clean (ruff is a test dependency: missing ruff fails, not skips)."""
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.is_file(), f"{ruff} is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [str(ruff), "check", "--no-cache", "desktop", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
