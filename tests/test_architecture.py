"""The boundaries STYLE.md section 1 draws, checked so they stay drawn.

What a user would notice if they slipped: ``trayproxy serve`` failing on a server with no
display because something imported the tray; the frozen app importing our ``desktop/x.py``
instead of the standard library's ``x``; the engine growing file or UI dependencies that make it
impossible to run headless or test in isolation; a lint error reaching CI.

Every module under ``desktop/`` (found by walking the tree, so a new one cannot slip past) is
placed in one of the six rows of ROWS and may import only the rows above its own, within what
its row reaches, and its own row only where SAME_ROW says so, without a cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


ENGINE_ALLOWED = (
    "desktop.config.model",
    "desktop.redaction",
    "desktop.routing",
    "desktop.engine.*",
    "desktop:__version__",
)


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "engine").rglob("*.py")),
    ids=lambda path: path.relative_to(PACKAGE).as_posix(),
)
def test_engine_imports_only_config_model_and_itself(path: Path) -> None:
    """The engine stays a headless library: no tray, CLI, controller, config files or keychain,
    only the configuration model handed to it, the route table it carries, the redactor and its
    own modules."""
    assert sorted(i for i in desktop_imports(path) if not is_allowed(i, ENGINE_ALLOWED)) == []


@dataclass(frozen=True)
class Row:
    """One row of STYLE.md section 1's "One-way imports"."""

    what: str
    # Exact module names, or subtrees as ``desktop.engine.*`` (the package and all under it); an
    # exact name wins over a subtree, a longer subtree over a shorter (config.model is row 1,
    # the rest of config row 2).
    modules: tuple[str, ...]
    # What of the rows above this row's modules may import (is_allowed rules); None for all.
    reaches: tuple[str, ...] | None = None


# Row 1, the ground floor: what every other row may build on.
GROUND = (
    "desktop",
    "desktop.atomicfile",
    "desktop.bundle",
    "desktop.clients",
    "desktop.codings",
    "desktop.config.model",
    "desktop.config.options",
    "desktop.redaction",
    "desktop.routing",
)
ROWS = (
    Row("the ground floor: imports nothing of ours but the settings' declaration", GROUND, reaches=()),
    Row("config readers, OS glue, logging", ("desktop.config.*", "desktop.platforms.*", "desktop.logs")),
    Row(
        "the engine: a headless library given the model, masking through the redactor",
        ("desktop.engine.*",),
        reaches=("desktop:__version__", "desktop.config.model", "desktop.redaction", "desktop.routing"),
    ),
    Row(
        "the controller and its rooms: the sole owner of a thread or an event loop; beside it the"
        " inspector, what passed through read for a person, and the recording of answers",
        ("desktop.controller.*", "desktop.inspector.*", "desktop.cache.*"),
        reaches=(*GROUND, "desktop.config.*", "desktop.engine.*"),
    ),
    Row(
        "the tray: the controller's vocabulary and OS glue, never the engine or config files",
        ("desktop.tray.*",),
        reaches=(*GROUND, "desktop.platforms.*", "desktop.controller.*"),
    ),
    Row("the front ends: anything", ("desktop.cli", "desktop.__main__", "desktop.commands.*")),
)

# Imports within one row, each allowed only where today's code makes it (importer, imported,
# both is_allowed rules); with RUN_TIME_PICKS set aside they form no cycle (checked below).
# Anything else within a row (redaction -> config.model, logs -> config.parse, a config
# reader -> platforms, the tray -> itself from outside tray/) is refused.
SAME_ROW = (
    # The model takes each setting's default from its declaration (config.options).
    ("desktop.config.model", "desktop.config.options"),
    # A listener carries its route table (routing.py: pure, importing nothing of ours).
    ("desktop.config.model", "desktop.routing"),
    # The config readers build on the parser: keys, show, store -> parse; localtoken -> keys,
    # parse, store.
    ("desktop.config.*", "desktop.config.*"),
    # The package picks the per-OS module at run time; those use the shared helpers
    # (linux, macos -> platforms.programs).
    ("desktop.platforms.*", "desktop.platforms.*"),
    # The engine is built of its own modules (service -> forward -> upstream -> headers ...).
    ("desktop.engine.*", "desktop.engine.*"),
    # The controller's verbs use its rooms (loop thread, status, watch); its face names them.
    ("desktop.controller.*", "desktop.controller.*"),
    # The tray's app draws icons and builds the menu.
    ("desktop.tray.*", "desktop.tray.*"),
    # The inspector's readers of each API build on its event-stream reader.
    ("desktop.inspector.*", "desktop.inspector.*"),
    # The recording of answers: recordings -> store -> key; exchange -> store.
    ("desktop.cache.*", "desktop.cache.*"),
    # The controller runs the inspector (its store is the engine's capture tap); the inspector
    # never reaches back into the controller.
    ("desktop.controller.inspection", "desktop.inspector.*"),
    # The controller makes the recording of answers its listeners share (the engine's recall);
    # the recording never reaches back into the controller.
    ("desktop.controller.proxy", "desktop.cache.*"),
    # The entry point runs the CLI, which runs the command groups.
    ("desktop.__main__", "desktop.cli"),
    ("desktop.cli", "desktop.commands.*"),
    # The tray's start makes its controller as serve does, and serves as serve when no tray runs.
    ("desktop.commands.tray", "desktop.commands.serve"),
)
# The cycles within a row today: none (the per-OS modules' helpers live in platforms/programs.py,
# the request class both send paths build on in engine/exactrequest.py). An entry would be
# (importer, imported) of an implementation picked at run time by the module it imports from.
RUN_TIME_PICKS: tuple[tuple[str, str], ...] = ()
MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def row_of(module: str) -> int | None:
    """The row (1 = the ground floor) ``module`` is placed in; None when it is in none."""
    best: tuple[int, int] | None = None  # (how specific the matching rule is, row)
    for number, row in enumerate(ROWS, 1):
        for rule in row.modules:
            if rule.endswith(".*"):
                base = rule[:-2]
                if module != base and not module.startswith(base + "."):
                    continue
                fit = len(base)
            elif module == rule:
                fit = sys.maxsize
            else:
                continue
            if best is None or fit > best[0]:
                best = (fit, number)
    return None if best is None else best[1]


def import_violations(module: str, imported: Iterable[str]) -> list[str]:
    """What is wrong with ``module`` importing each of ``imported`` (desktop_imports names):
    a module in no row, an import of a row below, of its own row not in SAME_ROW, or of a row
    above that its row does not reach."""
    row = row_of(module)
    if row is None:
        return [f"{module} is in no row: add it to a row of ROWS (STYLE.md section 1)"]
    problems = []
    for name in sorted(imported):
        target = name.split(":")[0]
        target_row = row_of(target)
        if target_row is None:
            problems.append(f"{module} imports {name}, which is in no row: add it to a row of ROWS")
        elif target_row > row:
            problems.append(f"{module} (row {row}) imports {name} from row {target_row}, a row below")
        elif target_row == row:
            if not any(is_allowed(module, (a,)) and is_allowed(name, (b,)) for a, b in SAME_ROW):
                problems.append(f"{module} imports {name} of its own row {row}, not in SAME_ROW")
        else:
            reaches = ROWS[row - 1].reaches
            if reaches is not None and not is_allowed(name, reaches):
                problems.append(f"{module} (row {row}) imports {name}: row {row} reaches only {reaches}")
    return problems


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports_only_rows_above_its_own(module: str) -> None:
    """Imports run one way (the ground floor <- config, platforms, logs <- engine <- controller
    <- tray <- CLI), so each row can be tested and reused without the ones built on it: every
    module under desktop/, found by walking the tree, is placed in a row and checked."""
    assert import_violations(module, desktop_imports(MODULES[module])) == []


def same_row_imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of its own row."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {name.split(":")[0] for name in desktop_imports(path)}
        graph[module] = {t for t in targets if t != module and row_of(t) == row_of(module)}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as the modules along it (the first again at the end); [] for none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node, [])
        if cycle:
            return cycle
    return []


def test_imports_within_a_row_form_no_cycle() -> None:
    """Within a row, modules build on each other one way too, with no loop (RUN_TIME_PICKS would
    name one kept on purpose; there is none)."""
    graph = same_row_imports()
    for importer, imported in RUN_TIME_PICKS:
        assert imported in graph[importer], f"{importer} no longer imports {imported}: drop it from RUN_TIME_PICKS"
        graph[importer].discard(imported)
    assert find_cycle(graph) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # The slip issue 13 found: config readers importing the engine's redactor.
        ("desktop.config.keys", "from desktop.engine.redact import MASK\n", "a row below"),
        ("desktop.config.parse", "def f():\n    from desktop.controller import ProxyController\n", "a row below"),
        ("desktop.redaction", "from desktop.config.model import Target\n", "not in SAME_ROW"),
        ("desktop.logs", "from desktop.config.parse import ConfigError\n", "not in SAME_ROW"),
        ("desktop.engine.forward", "from desktop.config.store import load_config\n", "reaches only"),
        ("desktop.tray.menu", "from desktop.engine.addresses import host_port\n", "reaches only"),
        ("desktop.controller", "from desktop.tray.app import TrayApp\n", "a row below"),
        ("desktop.listeners", "", "in no row"),
        ("desktop.cli", "from desktop.recorder import store\n", "in no row"),
        ("desktop.cache.store", "from desktop.controller import ProxyController\n", "not in SAME_ROW"),
    ],
)
def test_a_planted_slip_fails_the_row_checker(module: str, source: str, expected: str) -> None:
    """The row check would pass vacuously if it let a slip through: an upward import, an
    unlisted import within a row, one beyond what a row reaches, a module placed in no row."""
    problems = import_violations(module, imports_in_source(source, module))
    assert len(problems) == 1
    assert expected in problems[0]


def test_a_planted_cycle_within_a_row_is_found() -> None:
    """The parser importing the store, which imports the parser, is a loop the cycle check sees."""
    graph = same_row_imports()
    assert "desktop.config.parse" in graph["desktop.config.store"]
    graph["desktop.config.parse"].add("desktop.config.store")
    assert find_cycle(graph) == ["desktop.config.parse", "desktop.config.store", "desktop.config.parse"]


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


def test_every_test_file_has_a_name_of_its_own() -> None:
    """pytest imports test files by their base name (the tests folders are no packages): two
    test_store.py in different folders stop the whole run at collection (a fresh-clone CI run
    failed so)."""
    tests = Path(__file__).parent
    names = [path.name for path in tests.rglob("test_*.py") if "results" not in path.parts]
    assert sorted({name for name in names if names.count(name) > 1}) == []
