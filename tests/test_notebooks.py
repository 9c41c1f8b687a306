"""Notebooks as tested artifacts: one literal `parameters` cell, committed without outputs, and executed end to end
with tiny parameters.

Why papermill and not nbval for the execution test: nbval runs a notebook exactly as committed, with its default
parameters, which point at the real project (params.yaml, runs/, reports/, mlflow.db): it would overwrite the
repository's reports and log MLflow runs into its store, and it cannot pass the tiny model and dataset that make
a CPU run take seconds. papermill injects parameters (the same way `dvc repro report` runs the notebook), so
the test below executes the committed notebook in a throw-away project under tmp_path, with the tiny-random
model and a tiny local dataset, and checks what it writes. (`pytest --nbval-lax notebooks/` still works for a
manual check against the real project, with the side effects above.)
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def parameters_cell(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]


def parameter_names(cell) -> list[str]:
    names = []
    for node in ast.parse(cell.source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        names.append(target.id)
    return names


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cells = parameters_cell(nb)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', want exactly one"
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{path.name}: not an assignment: {ast.unparse(node)}"
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        assert len(targets) == 1 and isinstance(targets[0], ast.Name), f"{path.name}: {ast.unparse(node)}"
        ast.literal_eval(node.value)  # raises on anything papermill could not override cleanly (derived values)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_help_lists_parameters(path):
    names = parameter_names(parameters_cell(nbformat.read(path, as_version=4))[0])
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for name in names:
        assert f"  {name}:" in out, f"papermill --help-notebook does not list {name}:\n{out}"


TINY_PARAMS = {
    "data": {"dataset": "local", "source": "toy.jsonl", "name": "local", "label_names": ["negative", "positive"],
             "pool_per_class": 4, "dev_per_class": 4, "test_per_class": 4},
    "model": {"name": "tiny-random", "device": "cpu"},
    "generate": {"n_per_class": 2, "batch_size": 2, "outer_steps": 1, "inner_steps": 1, "init_candidates": 1,
                 "topk": 5, "max_seq_len": 8},
    "dp": {"enabled": False},
    "filter": {"n_per_class": 2, "label_shots": 1},
    "finetune": {"learning_rates": [1e-3], "steps": 1, "batch_size": 2},
    "experiment": {"datasets": ["local"], "seeds": [0], "n_per_class": 2, "generators": ["gradmm"],
                   "baselines": ["zero_shot", "random_real"], "methods": ["zero_shot", "random_real", "gradmm"]},
}


def tiny_project(root: Path) -> None:
    """A throw-away project: params.yaml with tiny settings and a 2-class local dataset."""
    import yaml

    pos = ["a wonderful, moving film", "great acting and a great story", "a delightful and charming comedy"]
    neg = ["a dull, boring mess", "terrible acting and an awful plot", "a tedious and lifeless drama"]
    rows = [{"text": f"{texts[i % 3]} number {i}", "label": label} for i in range(15)
            for label, texts in ((0, neg), (1, pos))]
    (root / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))


@pytest.mark.e2e
def test_classification_notebook_runs_with_tiny_parameters(tmp_path, monkeypatch):
    """Executes the committed notebook in-process (papermill) on the tiny-random model: it makes the missing results
    with the pipeline's functions (~10 s of GRADMM), writes the table, summary and figures, and logs MLflow runs
    into tmp_path/mlflow.db. Seeds, model and budget are left at None: they come from params.yaml."""
    import mlflow
    import papermill as pm

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny_project(tmp_path)
    (tmp_path / "times.tsv").write_text("# machine: test box\n0\t1500\tfinetune@local-gradmm-2-0\n")
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(ROOT / "notebooks" / "01_classification.ipynb", out, cwd=str(tmp_path), kernel_name="python3",
                        progress_bar=False,
                        parameters={"datasets": ["local"], "methods": ["zero_shot", "random_real", "gradmm"],
                                    "run_missing": True, "log_mlflow": True, "progress": False,
                                    "stage_times": "times.tsv"})

    csv = tmp_path / "reports" / "tables" / "classification.csv"
    md = tmp_path / "reports" / "tables" / "classification.md"
    assert csv.read_text().splitlines()[0] == "dataset,model,method,n_per_class,seed,accuracy,wall_seconds"
    assert len(csv.read_text().splitlines()) == 4  # header + zero_shot, random_real, gradmm
    assert "| gradmm |" in md.read_text() and "tiny-random, n = 2 per class" in md.read_text()
    assert (tmp_path / "reports" / "figures" / "classification.png").stat().st_size > 0
    assert (tmp_path / "reports" / "figures" / "generation" / "local-gradmm-seed0.png").stat().st_size > 0
    summary = (tmp_path / "reports" / "tables" / "generation_summary.md").read_text()
    assert "| local | gradmm | 1 |" in summary  # from the run's own generate_metrics.json and filter counts
    assert (tmp_path / "runs" / "local" / "results" / "gradmm-n2-seed0.json").is_file()
    assert "| finetune | local | test box | 1 | 0 | 2 | 2 | 0.00 |" in (tmp_path / "reports" / "tables" / "stage_runtimes.md").read_text()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # mlflow.set_tracking_uri also sets this variable: undo it after
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["01_classification"])
    assert (runs["tags.gradmm.kind"] == "report").sum() == 1  # the tables and figure, once, not in each run
    runs = runs[runs["tags.gradmm.kind"] != "report"]
    assert sorted(runs["tags.method"]) == ["gradmm", "random_real", "zero_shot"]
    assert runs["tags.mlflow.runName"].str.match(r"local-tiny-random-\w+-n2-seed0-[0-9a-f]{6}$").all()
    assert (runs["tags.params_hash"].str.len() == 12).all() and "metrics.accuracy" in runs
    assert (tmp_path / "mlartifacts").is_dir()


@pytest.mark.e2e
def test_nbval_runs_the_notebook_with_tiny_parameters(tmp_path):
    """nbval, as CI runs notebooks: the committed notebook with tiny parameters injected (papermill's
    parameterize, the same cell `dvc repro report` injects), placed in a throw-away project so that its runs,
    reports and mlflow.db stay under tmp_path. --nbval-lax: the committed notebook has no outputs to compare,
    so every cell must simply run without error."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    tiny_project(tmp_path)
    nb = load_notebook_node(str(ROOT / "notebooks" / "01_classification.ipynb"))
    nb = parameterize_notebook(nb, {"datasets": ["local"], "methods": ["zero_shot", "random_real"],
                                    "run_missing": True, "log_mlflow": False, "progress": False})
    path = tmp_path / "01_classification.ipynb"
    nbformat.write(nb, path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout and (tmp_path / "reports" / "tables" / "classification.csv").is_file()


@pytest.mark.e2e
def test_committed_executed_notebook_matches_a_rerun(tmp_path):
    """nbval on stored outputs: reports/executed/01_classification.ipynb, as `dvc repro report` committed it, re-run
    by nbval in a copy of the committed quick results (runs/, params.yaml). Every text and table output must equal
    the stored one, after tests/data/nbval_sanitize.cfg masks absolute paths (the venv, the MLflow store) and
    tqdm's widget warning; nbval does not compare images. Fails when the committed notebook is not what the
    current package makes of the committed results (re-run the report stage and commit)."""
    import shutil

    executed = ROOT / "reports" / "executed" / "01_classification.ipynb"
    assert executed.is_file(), "the report stage's executed notebook is not committed"
    shutil.copytree(ROOT / "runs", tmp_path / "runs")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(executed, tmp_path / executed.name)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval", "-p", "no:cacheprovider",
                          "--nbval-sanitize-with", str(ROOT / "tests" / "data" / "nbval_sanitize.cfg"),
                          "--rootdir", str(tmp_path), executed.name], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "passed" in out.stdout and "failed" not in out.stdout
