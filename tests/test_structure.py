"""The import graph of the minigd package has no cycle.

The graph is built from the source as ``../shared/tools/structure.py`` builds it: every module
under minigd/ is parsed, every ``import`` and ``from ... import`` counts, wherever it stands
(module level or inside a function), relative imports are resolved against the package, and
``from pkg import name`` points at the submodule ``pkg.name`` when there is one, else at ``pkg``.
Imports of the top-level ``minigd`` package itself (``import minigd as mg`` inside a function)
are left out, as structure.py leaves them out: that package only re-exports.
"""

import ast
import os
from pathlib import Path

import minigd

PACKAGE = Path(minigd.__file__).parent


def modules(root):
    """{dotted module name: path} for every .py file under the package directory ``root``."""
    found = {}
    for directory, _, files in os.walk(root):
        for file in files:
            if file.endswith(".py"):
                path = Path(directory, file)
                parts = (root.name,) + path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def import_graph(root):
    """{module: set of modules of the same package it imports}, from the source of ``root``."""
    mods = modules(root)
    top = root.name
    graph = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets += subs
                if len(subs) < len(node.names):
                    targets.append(base)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            for target in targets:
                if target in mods and target != name and top not in (name, target):
                    graph[name].add(target)
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_minigd_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "minigd.cli.args" in graph and "minigd.registry" in graph
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("from .sub import b\n\ndef f():\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    (package / "c.py").write_text("import pkg\nfrom pkg import a\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg"] == set()  # the top package is left out
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_registry_and_cli_are_leaves_of_the_engine():
    """The engine modules never import the registry or the CLI (names flow one way)."""
    graph = import_graph(PACKAGE)
    for module in (
        "minigd.layers",
        "minigd.losses",
        "minigd.optim",
        "minigd.schedules",
        "minigd.model",
        "minigd.training",
    ):
        assert "minigd.registry" not in graph[module], module
        assert not any(t.startswith("minigd.cli") for t in graph[module]), module
