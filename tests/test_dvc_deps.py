"""Each dvc.yaml stage lists as deps every gradmm module its command can import.

DVC reruns a stage only when one of its deps changes, so a module the command imports but the stage does not
list (a variant's settings in methods/registry.py, the decoding prompt in methods/prompts.py, ...) can change
what the stage would write while DVC keeps the stale outputs. The imports are read statically with ast and closed over
conservatively: an import inside a function counts as much as one at the top of a module. For a `gradmm <sub>`
command the closure starts at gradmm/cli.py's top-level imports and those of the module and function the
subcommand dispatches to (and of the helpers it calls); for `papermill notebooks/<nb>.ipynb`, at the notebook's imports.
"""

import argparse
import ast
import json
import re
from pathlib import Path

import yaml

from gradmm.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI = "gradmm/cli.py"


def module_file(name: str) -> str | None:
    """'gradmm.core.models' -> 'gradmm/core/models.py'; a package -> its __init__.py; None if not in the package."""
    path = ROOT / name.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return str(path.with_suffix(".py").relative_to(ROOT))
    if (path / "__init__.py").is_file():
        return str((path / "__init__.py").relative_to(ROOT))
    return None


def gradmm_imports(tree: ast.AST) -> set[str]:
    """The gradmm module files imported anywhere in tree: `import gradmm.core.x`, `from gradmm.core.x import ...`,
    `from gradmm.core import x` (a subpackage's empty __init__.py counts as a file too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {f for name in names if name.split(".")[0] == "gradmm" and (f := module_file(name))}


def import_closure(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += gradmm_imports(ast.parse((ROOT / path).read_text()))
    return seen


def subcommand_imports(subcommand: str) -> set[str]:
    """gradmm/cli.py's and the subcommand's module's top-level gradmm imports, and those of the subcommand's
    function and the helpers it calls in its module."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    func = subparsers[subcommand].get_default("func")
    source = module_file(func.__module__)
    found = set()
    for path in (CLI, source):
        tree = ast.parse((ROOT / path).read_text())
        found |= gradmm_imports(ast.Module([node for node in tree.body if not isinstance(node, ast.FunctionDef)], []))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    seen, todo = set(), [func.__name__]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            found |= gradmm_imports(functions[name])
            todo += [n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions]
    return import_closure(found) | {CLI, source}


def notebook_imports(notebook: str) -> set[str]:
    found = set()
    for cell in json.loads((ROOT / notebook).read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and not source.lstrip().startswith("%%"):  # a cell magic is no Python
            lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
            found |= gradmm_imports(ast.parse("\n".join(lines)))
    return import_closure(found)


def deps_problems(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, str]:
    """Stage name -> what is wrong with its gradmm deps; empty when every stage is complete and none is stale."""
    problems = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        stage = stage.get("do", stage)  # foreach stages keep cmd and deps under `do`; matrix stages at the top
        cmd, deps = " ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"], stage.get("deps", [])
        if m := re.search(r"(?:^|&&|;)\s*gradmm\s+([\w-]+)", cmd):
            needed = subcommand_imports(m.group(1))
        elif m := re.search(r"\bpapermill\s+(\S+\.ipynb)", cmd):
            needed = notebook_imports(m.group(1))
        else:
            problems[name] = f"runs neither `gradmm <subcommand>` nor `papermill <notebook>`: {cmd!r}"
            continue
        whole_package = bool({"gradmm", "gradmm/"} & set(deps))
        missing = [] if whole_package else sorted(needed - set(deps))
        stale = sorted(d for d in deps if re.fullmatch(r"gradmm/.+\.py", d) and not (ROOT / d).is_file())
        if missing or stale:
            problems[name] = "; ".join([f"missing deps {missing}"] * bool(missing)
                                       + [f"stale deps {stale}"] * bool(stale))
    return problems


def test_every_stage_lists_the_gradmm_modules_its_command_can_import_and_none_that_is_gone():
    problems = deps_problems()
    assert not problems, ("dvc.yaml deps (a stage lists each gradmm/<module>.py its command can import; stale: the "
                          "module is gone):\n" + "\n".join(f"  {name}: {what}" for name, what in problems.items()))


def test_a_stage_that_omits_a_module_its_command_imports_is_named(tmp_path):
    """The check can fail: `gradmm generate` reaches the method registry and the core, and a stage listing only
    the CLI module is reported with them missing."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"generate": {
        "cmd": "gradmm generate --out x", "deps": ["gradmm/cli.py"]}}}))
    problem = deps_problems(tmp_path / "dvc.yaml")["generate"]
    for module in ("gradmm/methods/registry.py", "gradmm/core/admm.py", "gradmm/config.py", "gradmm/io/records.py"):
        assert module in problem, module
