"""Write RUN_DIR/Makefile: the classification stages of dvc.yaml under a given params file (e.g. the full
profile), for running them outside DVC: `make -k -j N` runs the stages' own commands in dependency order, N
at a time, appends each command's exit code, wall time (ms) and stage name to times.tsv (read by
gradmm.reporting.runtimes) and its output to logs/<stage>.log. Stages whose outputs already exist in RUN_DIR are left
out, so a second call resumes (a generation's checkpoints resume inside it). A directory output stands for a
marker file its stage writes last (a generation's raw.jsonl, a prepared task's meta.json). An upstream
output that is missing but no longer needed (raw texts whose training sets exist) is not re-made.

    python scripts/full_makefile.py PARAMS RUN_DIR
"""

import argparse
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import yaml
from dvc.repo import Repo

STAGES = ("prepare", "generate", "filter", "baseline", "finetune")
DIR_MARKERS = {"prepare": "meta.json", "generate": "raw.jsonl"}
PROJECT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\$\{\s*([^}]+?)\s*\}")  # DVC's ${item.x}


def stage_rules(params: Path) -> list[tuple]:
    """(stage name, command, output paths, dependency paths) of the STAGES in dvc.yaml under `params`."""
    with tempfile.TemporaryDirectory() as tmp:  # DVC reads dvc.yaml + params.yaml of one folder
        shutil.copy(PROJECT / "dvc.yaml", tmp)
        shutil.copy(params, Path(tmp) / "params.yaml")
        Repo.init(tmp, no_scm=True)
        root = Path(tmp).resolve()
        rel = lambda p: str(Path(p).resolve().relative_to(root))  # noqa: E731
        stages = [st for st in Repo(tmp).index.stages if st.name.split("@")[0] in STAGES]
    dvc_stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    templates = {name: d.get("do", d).get("cmd") for name, d in dvc_stages.items()}  # a foreach's is under do
    return [(st.name, quoted_cmd(templates[st.name.split("@")[0]], st.cmd), [rel(o.fs_path) for o in st.outs],
             [rel(d.fs_path) for d in st.deps]) for st in stages]


def quoted_cmd(template: str, cmd: str) -> str:
    """DVC's `cmd` with each value it pasted into `template` shell-quoted (DVC pastes them as they are: a value
    holding a quote or `;` would break the command). The values are read back by matching `cmd` to `template`."""
    parts = PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    groups = {name: f"v{i}" for i, name in enumerate(dict.fromkeys(parts[1::2]))}
    pattern, seen = "", set()
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        else:
            pattern += f"(?P={groups[part]})" if part in seen else f"(?P<{groups[part]}>.*?)"
            seen.add(part)
    match = re.fullmatch(pattern, cmd, re.S)
    if not match:
        raise ValueError(f"command {cmd!r} does not match its dvc.yaml template {template!r}")
    return "".join(part if i % 2 == 0 else shlex.quote(match[groups[part]]) for i, part in enumerate(parts))


def stage_targets(name: str, outs: list[str]) -> list[str]:
    """The files make tracks for a stage's outputs: a directory output stands for its marker file."""
    marker = DIR_MARKERS.get(name.split("@")[0])
    return [f"{o}/{marker}" if marker else o for o in outs]


def needed_stages(rules: list[tuple], run_dir: Path) -> list[tuple]:
    """The stages to run: each result (finetune) not in run_dir yet, and what those need that is missing. An
    upstream stage whose output is gone (a generation's raw texts are not committed, so a fresh clone lacks
    them) is re-run only when a missing downstream output needs it, not because its own output is absent."""
    missing = {name for name, _, outs, _ in rules if not all((run_dir / t).exists() for t in stage_targets(name, outs))}
    maker = {o: name for name, _, outs, _ in rules for o in outs}
    needed = {name for name in missing if name.startswith("finetune@")}
    todo = list(needed)
    deps_of = {name: deps for name, _, _, deps in rules}
    while todo:
        for d in deps_of[todo.pop()]:
            if d in maker and maker[d] in missing and maker[d] not in needed:
                needed.add(maker[d])
                todo.append(maker[d])
    return [r for r in rules if r[0] in needed]


def goal_order(rules: list[tuple], datasets: list[str]) -> list[str]:
    """The results first, dataset by dataset (experiment.datasets' order), then seed by seed (make builds each
    goal's prerequisites before the next goal): a stopped run leaves whole seeds of a table, not a bit of everything."""

    def key(rule):
        name = rule[0]
        kind, rest = name.split("@")
        if kind != "finetune":
            return (1, 0, 0, 0)
        _, n, seed = rest.rsplit("-", 2)
        return (0, datasets.index(rest.split("-")[0]), int(seed), -int(n))

    return [targets[0] for _, _, targets, _ in sorted(rules, key=key)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("params", type=Path)
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    datasets = yaml.safe_load(args.params.read_text())["experiment"]["datasets"]
    produced, rules = {}, []
    for name, cmd, outs, deps in needed_stages(stage_rules(args.params), args.run_dir):
        targets = stage_targets(name, outs)
        produced.update({o: targets[0] for o in outs})  # make knows a stage by its first output
        rules.append((name, cmd, targets, deps))
    lines = [".PHONY: all", "all: " + " ".join(goal_order(rules, datasets)), ""]
    for name, cmd, targets, deps in rules:
        needs = sorted({produced[d] for d in deps if d in produced})
        recipe = (f"mkdir -p logs; s=$(date +%s%N); {cmd} > {shlex.quote(f'logs/{name}.log')} 2>&1; rc=$?; "
                  f"echo \"$rc\t$(( ($(date +%s%N) - s) / 1000000 ))\t\"{shlex.quote(name)} >> times.tsv; exit $rc")
        lines += [f"{targets[0]}: {' '.join(needs)}", "\t@" + recipe.replace("$", "$$"), ""]  # make reads $ as $$
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "Makefile").write_text("\n".join(lines))
    print(f"{len(rules)} stages to run -> {args.run_dir / 'Makefile'}")


if __name__ == "__main__":
    main()
