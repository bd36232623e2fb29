"""The layout as rules: dependencies point one way, the import graph has no cycles, and the
optimizer package is made of small functions. Read from the source with ``ast`` (every
import, including those inside functions), so a rule cannot be broken by a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "rmsprop"

#: layer -> the layers of the package it may import (besides itself); lower layers first.
LAYERS = {
    "pure": set(),  # NumPy only: the reference, presets, validation rules, the algorithm box
    "lowbit": {"pure"},  # codecs, state forms and state dicts
    "backends": {"pure", "lowbit"},  # the implementations of one step
    "optim": {"pure", "lowbit", "backends"},  # the optimizer: plan, check, execute
    "cli": {"pure", "lowbit", "backends", "optim"},  # nothing imports the command line
}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("lowbit", "backends", "optim", "cli"):
        return parts[1]
    if module in ("rmsprop", "rmsprop.__main__"):
        return "cli"  # the package root re-exports everything and loads the rest lazily
    if module == "rmsprop._dtensor":
        return "pure"  # imports torch's DTensor only
    return "pure"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that ``module`` imports (anywhere in the file)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {m: imports(m, p, known) for m, p in found.items()}
    for m in edges:  # a package's own __init__ is not an edge of its modules
        edges[m] = {n for n in edges[m] if not m.startswith(n + ".")}
    return edges


def test_dependencies_point_one_way():
    broken = [
        f"{m} ({layer(m)}) imports {n} ({layer(n)})"
        for m, targets in graph().items()
        for n in targets
        if layer(n) != layer(m) and layer(n) not in LAYERS[layer(m)]
    ]
    assert not broken, "\n".join(broken)


#: what a module above ``backends`` may import from it: the protocol, the registry and the
#: two adapters every back end shares (working copies, lazy sparse rows), never a back end
BACKENDS_SHARED = {"rmsprop.backends", "rmsprop.backends.base", "rmsprop.backends.registry",
                   "rmsprop.backends.widen", "rmsprop.backends.sparse"}  # fmt: skip


def test_no_module_above_the_back_ends_imports_a_particular_one():
    """Each back end owns its special cases (numba's background compile and stand-in, its
    finiteness check) behind the protocol of ``backends.base``: the optimizer, the command
    line's step code and the front ends reach a back end by name through the registry."""
    reaching = [
        f"{m} imports {n}"
        for m, targets in graph().items()
        if layer(m) == "optim"
        for n in targets
        if layer(n) == "backends" and n not in BACKENDS_SHARED
    ]
    assert not reaching, "\n".join(reaching)


def test_the_import_graph_has_no_cycles():
    edges, done, stack = graph(), set(), []

    def visit(m: str) -> None:
        if m in stack:
            cycle = [*stack[stack.index(m) :], m]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        stack.append(m)
        for n in sorted(edges[m]):
            visit(n)
        stack.pop()
        done.add(m)

    for m in sorted(edges):
        visit(m)


def test_the_optimizer_package_is_made_of_small_functions():
    """No function of ``rmsprop.optim`` has more than 40 lines of body (its docstring not
    counted): the step can be read one screen at a time."""
    long = []
    for path in (PACKAGE / "optim").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:] or body
                lines = node.end_lineno - body[0].lineno + 1
                if lines > 40:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, long


def test_the_rules_see_the_imports():
    """The graph is real: the optimizer imports the planner, a back end the host glue."""
    edges = graph()
    assert "rmsprop.optim.planner" in edges["rmsprop.optim.rmsprop"]
    assert "rmsprop.backends.host" in edges["rmsprop.backends.numba_cpu"]
    assert layer("rmsprop.backends.numba_cpu") == "backends"
