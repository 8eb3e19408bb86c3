"""No module of desktop/ reaches into another library's private names (issue 12 §1).

A private name (``_x``) of aiohttp, tomlkit or the standard library can change or vanish in any
release; a user who installs a newer one within our ranges then gets a crash (tomlkit 0.15
removed ``Container._insert_after`` and ``config set-key`` failed). The few places where there is
no public way are listed in PINNED: each says so in one comment, its version is bounded in
pyproject.toml or gated in the code, and tests/engine/test_aiohttp_internals.py pins the names.

The scan is approximate, as static checks are: it flags ``x._name`` unless ``_name`` is one of
ours (defined somewhere in desktop/), ``_name=`` keyword arguments we did not define, and
``self._name`` / ``super()._name`` in a class whose library base class has ``_name`` (as a class
member, or as ``self._name`` in its source). A base it cannot import (the GUI toolkits, a class
made at run time) is not looked into.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "desktop"
# Not imported to look into their classes: loading them may need a display. (desktop's own
# headless modules are, to follow a class of ours to its library base.)
GUI_MODULES = ("pystray", "PIL", "gi", "AppKit", "Xlib", "tkinter", "desktop.tray")

# Names that look private but are documented public API.
DOCUMENTED = {
    "_exit": "os._exit: exit at once without cleanup (documented in os)",
    "_MEIPASS": "sys._MEIPASS: the frozen bundle's folder (documented by PyInstaller)",
}
# Library internals used on purpose where no public way exists; see each place's comment.
PINNED = {
    "desktop/engine/forward.py": {"_real_headers", "_send_headers_immediately", "_prepare_headers", "_headers"},
    "desktop/engine/leansend.py": {"_skip_auto_headers"},
}


def dotted(node: ast.expr) -> str:
    """``web.StreamResponse`` -> ``"web.StreamResponse"``; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it names: ``from aiohttp import web`` gives web -> aiohttp.web."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def resolve_library_class(name: str) -> type | None:
    """The class ``name`` (a dotted path) names, when it can be imported without a display."""
    if not name or name.split(".")[0] in GUI_MODULES:
        return None
    module_name, _, attribute = name.rpartition(".")
    while module_name:
        try:
            found: object = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attribute = f"{head}.{attribute}"
            continue
        for part in attribute.split("."):
            found = getattr(found, part, None)
        return found if isinstance(found, type) else None
    return None


def library_class_has(cls: type, name: str) -> bool:
    """``name`` is a member of a library class among ``cls`` and its bases, or one of them
    sets ``self.<name>`` (our own classes in between are passed over)."""
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] == "desktop":
            continue
        if name in vars(klass):
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if f"self.{name}" in source:
            return True
    return False


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def own_private_names(sources: Iterable[str]) -> set[str]:
    """Private names desktop/ itself defines: functions, classes, module names, parameters,
    ``__slots__`` entries and attributes it assigns."""
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Assign) and any(dotted(t) == "__slots__" for t in node.targets):
                names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return {name for name in names if isinstance(name, str) and is_private(name)}


def is_self_or_super(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and dotted(node.func) == "super"


def private_reaches(
    source: str, own: set[str], resolve: Callable[[str], type | None] = resolve_library_class
) -> list[str]:
    """``line: what`` for each private name of another library that ``source`` uses."""
    tree = ast.parse(source)
    aliases = import_aliases(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            if not is_self_or_super(node.value) and node.attr not in own:
                found.append(f"{node.lineno}: {dotted(node.value) or '...'}.{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg and is_private(node.arg) and node.arg not in own:
            found.append(f"{node.lineno}: {node.arg}=")
        elif isinstance(node, ast.ClassDef):
            bases = []
            for base in node.bases:
                name = dotted(base)
                head, _, rest = name.partition(".")
                full = aliases.get(head, head) + (f".{rest}" if rest else "")
                library_class = resolve(full)
                if library_class is not None:
                    bases.append(library_class)
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Attribute)
                    and is_private(inner.attr)
                    and is_self_or_super(inner.value)
                    and any(library_class_has(base, inner.attr) for base in bases)
                ):
                    found.append(f"{inner.lineno}: {dotted(inner.value) or 'super()'}.{inner.attr} ({node.name})")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


def desktop_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_uses_a_private_name_of_another_library() -> None:
    """Outside PINNED (each a place with no public way, bounded and pinned), desktop/ uses
    only public names of aiohttp, tomlkit, the standard library and the rest."""
    own = own_private_names(path.read_text(encoding="utf-8") for path in desktop_files())
    reaches: dict[str, list[str]] = {}
    for path in desktop_files():
        relative = path.relative_to(REPO).as_posix()
        allowed = PINNED.get(relative, set()) | set(DOCUMENTED)
        found = [
            line
            for line in private_reaches(path.read_text(encoding="utf-8"), own)
            if not any(f".{name}" in line or f" {name}=" in line for name in allowed)
        ]
        if found:
            reaches[relative] = found
    assert reaches == {}


def test_every_pinned_name_is_still_used() -> None:
    """An entry of PINNED whose use is gone is taken out, so the list stays the truth."""
    own = own_private_names(path.read_text(encoding="utf-8") for path in desktop_files())
    for relative, names in PINNED.items():
        text = "\n".join(private_reaches((REPO / relative).read_text(encoding="utf-8"), own - names))
        assert sorted(name for name in names if name not in text) == [], relative


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("session._retry_connection = False\n", ["1: session._retry_connection"]),
        ("runner._shutdown_timeout = 1\n", ["1: runner._shutdown_timeout"]),
        ("x = ws._response.raw_headers\n", ["1: ws._response"]),
        ("web.StreamResponse(status=200, _real_headers=h)\n", ["1: _real_headers="]),
        (
            "from aiohttp import web\n"
            "class R(web.StreamResponse):\n"
            "    async def _prepare_headers(self):\n"
            "        await super()._prepare_headers()\n"
            "        self._mine = self._headers\n",
            ["4: super()._prepare_headers (R)", "5: self._headers (R)"],
        ),
        ("class Mine:\n    def _go(self):\n        self._state = 1\n        other._go()\n", []),
    ],
    ids=["attribute", "attribute-set", "chained", "keyword", "subclass", "own-names"],
)
def test_the_scan_finds_each_kind_of_reach(snippet: str, expected: list[str]) -> None:
    """The check above would pass vacuously if the scan missed a form; it does not."""
    own = own_private_names([snippet]) - {"_retry_connection", "_shutdown_timeout"}
    assert private_reaches(snippet, own) == expected
