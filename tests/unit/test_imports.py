"""No import circles in phantom/: every module imports alone in a fresh interpreter, and the
graph of its imports inside the package (those under ``if TYPE_CHECKING:`` included, since a
circle there is still a circle to a reader) has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "phantom"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The phantom modules ``name`` imports (``from . import x`` names module x, when it is one).
    Its own packages are left out: Python imports them before the module in any case."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    ancestors = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 1)}
    return {module for module in found if module in MODULES and module != name} - ancestors


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name) for name in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as the list of modules along it, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_walker_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_walker_reads_relative_and_absolute_imports() -> None:
    assert "phantom.context" in imports_of("phantom.proxy")
    assert "phantom.cache.policy" in imports_of("phantom.cache.store")  # from . import policy
    assert "phantom.config" in imports_of("phantom.cli")  # from phantom.config import ...


def test_no_import_cycle_in_phantom() -> None:
    assert find_cycle(graph()) is None


@pytest.mark.timeout(120)
def test_each_module_imports_alone() -> None:
    """Each in its own interpreter, so that no module is helped by one imported before it."""
    script = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"
    failures = []
    for name in MODULES:
        if name == "phantom.__main__":
            continue  # it runs the CLI
        done = subprocess.run(
            [sys.executable, "-c", script, name], capture_output=True, text=True, timeout=30
        )
        if done.returncode:
            failures.append(f"{name}: {done.stderr.strip().splitlines()[-1]}")
    assert not failures
