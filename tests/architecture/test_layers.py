"""The architecture the file tree promises: imports point one way, and no module cycle.

    common <- models <- pipeline (sources, datasets) <- pipeline.training / pipeline.evaluation
           <- export <- tuning <- tasks <- cli, benchmarks

A module may import its own layer or a lower one. Static: the imports are read from the source
(every ``import`` / ``from ... import``, including ones inside functions), nothing is executed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "models", "pipeline", "export", "tuning", "tasks", "benchmarks")
LAYERS = [("common",), ("models",), ("pipeline",), ("pipeline.training", "pipeline.evaluation"), ("export",),
          ("tuning",), ("tasks",), ("cli", "benchmarks")]


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix of ``module``."""
    best, length = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    if best is None:
        raise KeyError(module)
    return best


def project_modules() -> dict[str, Path]:
    modules = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from package import module`` counts as the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = sorted(f"{m} (layer {layer_of(m)}) imports {dep} (layer {layer_of(dep)})"
                    for m, deps in import_graph().items() for dep in deps if layer_of(dep) > layer_of(m))
    assert not upward, "\n".join(upward)


def test_no_module_cycle():
    graph = import_graph()
    # a package's __init__ importing its own submodules is how a package exposes them, not a cycle
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d in graph)} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module,dep,ok", [("export.runtime", "pipeline.preprocess", True),
                                           ("pipeline.sources.specs", "export.runtime", False),
                                           ("pipeline.training.classifier", "pipeline.evaluation.report", True),
                                           ("tuning.search", "tasks", False)])
def test_layer_rule_by_hand(module, dep, ok):
    assert (layer_of(dep) <= layer_of(module)) is ok
