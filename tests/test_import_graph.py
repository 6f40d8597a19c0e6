"""The package's layering: imports go one way (geometry → memory → models → sampling → data → convert →
checkpoints → train / world → command line) and no two modules import each other, directly or in a circle.

Every ``import`` of ``mirage_jax`` counts, also the ones inside functions (a lazy import is still a dependency).
A module of the command layer is a ``cli.py`` / ``*_cli.py`` or one of ``COMMAND_MODULES``; the base layer is the
top-level utilities (``config``, ``geometry``, ``sharding``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mirage_jax"
LAYERS = ("base", "memory", "models", "sampling", "data", "convert", "checkpoints", "train", "world", "command")
SIBLINGS = {"train", "world"}  # the same rank: neither imports the other
COMMAND_MODULES = {"mirage_jax.cli", "mirage_jax.commands", "mirage_jax.demo", "mirage_jax.plan", "mirage_jax.__main__"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: the mirage_jax modules it imports}``."""
    modules = _modules()

    def resolve(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else ""

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {resolve(a.name) for a in node.names if a.name.startswith("mirage_jax")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                if base.startswith("mirage_jax"):
                    imported |= {resolve(f"{base}.{a.name}") or resolve(base) for a in node.names}
        graph[name] = imported - {name, ""}
    return graph


def layer(module: str) -> str:
    last = module.rsplit(".", 1)[-1]
    if module in COMMAND_MODULES or last == "cli" or last.endswith("_cli"):
        return "command"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def test_imports_go_downward_only():
    rank = {name: i for i, name in enumerate(LAYERS)}
    wrong = []
    for module, imported in import_graph().items():
        for target in imported:
            a, b = layer(module), layer(target)
            if rank[b] > rank[a] or (a != b and {a, b} <= SIBLINGS):
                wrong.append(f"{module} ({a}) imports {target} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = import_graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_graph_sees_lazy_and_relative_imports():
    """The checker itself: a function-level import and the package layout are read."""
    graph = import_graph()
    assert "mirage_jax.checkpoints" in graph["mirage_jax.world.loading"]  # imported inside a function
    assert layer("mirage_jax.world.generate_cli") == "command" and layer("mirage_jax.geometry") == "base"
    assert len(graph) > 80
