"""The package's import graph shows its architecture: no cycles, no arrow upwards between the layers

    config, io  <  core  <  methods  <  experiments  <  reporting  <  commands  <  cli

(a layer may import any layer below it), imports at module top (an import inside a function hides an edge),
and one function that builds every training set."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradmm"
LAYERS = {"gradmm": 0, "config": 0, "io": 0, "core": 1, "methods": 2, "experiments": 3, "reporting": 4, "commands": 5,
          "cli": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "gradmm"]


def resolve(imported: str, name: str) -> str:
    """`from gradmm.methods import registry` imports the module gradmm.methods.registry."""
    candidate = f"{imported}.{name}"
    return candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).is_file() else imported


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    graph, inner = {}, []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, tree = module_name(path), ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        edges = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gradmm":
                edges |= {resolve(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "gradmm" for a in node.names):
                edges |= {a.name for a in node.names if a.name.split(".")[0] == "gradmm"}
            else:
                continue
            if id(node) not in top:
                inner.append(f"{module}:{node.lineno}")
    return graph, inner


def test_the_graph_has_no_cycle():
    graph, _ = import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                pytest.fail(f"import cycle: {' -> '.join(path[path.index(dep):] + [dep])}")
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_layer_imports_a_layer_above_it():
    graph, _ = import_graph()
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer(d) > layer(m)]
    assert not upward, upward


def test_package_imports_sit_at_module_top():
    _, inner = import_graph()
    assert not inner, f"imports of gradmm inside functions hide the graph: {inner}"


def test_the_graph_reader_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The checks above could fail: a core module importing reporting is found."""
    fake = tmp_path / "gradmm"
    (fake / "core").mkdir(parents=True)
    (fake / "reporting").mkdir()
    (fake / "core" / "bad.py").write_text("from gradmm.reporting import tables\n")
    (fake / "reporting" / "tables.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    graph, _ = import_graph()
    assert graph["gradmm.core.bad"] == {"gradmm.reporting.tables"}
    assert layer("gradmm.reporting.tables") > layer("gradmm.core.bad")


def test_one_function_builds_every_training_set():
    """Outside gradmm.methods, no module calls the filter or a baseline builder directly: the CLI stages, the
    classification experiment and the studies all go through make_trainset."""
    direct = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "methods":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in ("filter_rows", "select_random", "select_coreset", "generate_llm_dataset"):
                    direct.append(f"{module_name(path)}:{node.lineno} {name}")
    assert not direct, direct
