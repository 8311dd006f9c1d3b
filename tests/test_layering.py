"""The house runs one way: each package imports only packages below it, and no module imports in a circle.

Read from the source (every `import` statement, also inside functions and TYPE_CHECKING blocks),
so the rule holds for lazy imports too, and without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first: a package may import only the packages before it in this list.
LAYERS = ["valuation", "storage", "scoring", "reporting", "sample", "evaluation", "tasks", "flows"]
# Third-party libraries the core must not depend on: it is plain PyTorch, usable from any training code.
FORBIDDEN_IN_CORE = {"prefect", "zarr", "dask", "distributed", "fsspec", "numcodecs"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything the module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names} & MODULES.keys()
            out.update(submodules)  # `from pkg import mod` imports the module mod
            if len(submodules) < len(node.names):
                out.add(module)
    return out


GRAPH = {name: {m for m in _imports(name, path) if m in MODULES} for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_lower_layers(name):
    own = LAYERS.index(name.split(".")[0])
    upward = sorted(m for m in GRAPH[name] if LAYERS.index(m.split(".")[0]) > own)
    assert not upward, f"{name} imports {upward}, which sit above it ({' <- '.join(LAYERS)})"


def test_core_imports_no_orchestration_or_storage_library():
    for name, path in MODULES.items():
        if name.split(".")[0] == "valuation":
            used = {m.split(".")[0] for m in _imports(name, path)} & FORBIDDEN_IN_CORE
            assert not used, f"{name} imports {sorted(used)}: the core is plain PyTorch"


def _cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, f"modules importing each other in a circle: {cycles}"
