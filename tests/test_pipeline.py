"""End to end: the DVC pipeline on a tiny model and a tiny local dataset, in a scratch copy of the project.

Checks what the classification issue asks of `dvc repro`: it runs every stage, a second run is a no-op, and
changing a generation param invalidates generation and what depends on it, nothing upstream.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import toy_examples

ROOT = Path(__file__).resolve().parent.parent
TINY_PARAMS = {
    "data": {"dataset": "local", "source": "toy.jsonl", "name": "local", "label_names": ["negative", "positive"],
             "pool_per_class": 10, "dev_per_class": 5, "test_per_class": 5},
    "model": {"name": "tiny-random", "device": "cpu"},
    "generate": {"n_per_class": 4, "batch_size": 2, "outer_steps": 2, "inner_steps": 2, "topk": 20,
                 "init_candidates": 2, "max_seq_len": 10, "rho": 0.1},
    "dp": {"enabled": False},
    "filter": {"n_per_class": 2, "label_filter": False},
    "finetune": {"learning_rates": [1.0e-3], "steps": 2, "batch_size": 2},
    "experiment": {"datasets": ["local"], "seeds": [0], "n_per_class": [2], "generators": ["gradmm"],
                   "baselines": ["zero_shot", "random_real"], "methods": ["zero_shot", "random_real", "gradmm"],
                   "llm_raw_per_class": 2, "llm_shots": 1, "coreset_features": "minilm"},
    "study": {"datasets": ["local"], "n_per_class": [2], "raw_per_class": 4, "generation_seeds": [0], "seeds": [0, 1],
              "methods": ["random_real", "gradmm_joint"], "generate": {"outer_steps": 1}, "finetune": {},
              "diagnostics_sets": 1, "screen": {"datasets": ["local"], "methods": ["gradmm_converge"]}},
    "privacy": {"datasets": ["local"], "n_per_class": 2, "methods": ["random_real"], "members": 5, "canaries": 1,
                "canary_alternatives": 5, "canary_method": "gradmm_joint", "epsilons": [1.0], "dp_seeds": [0],
                "attack_lr": 1.0e-3, "second_model": ""},
    "transfer": {"datasets": ["local"], "targets": ["minilm"], "n_per_class": 2, "methods": ["random_real", "gradmm_joint"],
                 "seeds": [0]},
    "variants": {"gradmm": {}},
}


def _run(cmd, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _check_mlflow_runs(project: Path) -> None:
    """The finetune stage logged its runs live (loss per step); the report stage added the rest, none twice."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("01_classification")
    runs = client.search_runs([exp.experiment_id])
    results = [r for r in runs if r.data.tags.get("gradmm.kind") != "report"]
    assert sorted(r.data.tags["method"] for r in results) == ["gradmm", "random_real", "zero_shot"]
    assert len({r.data.tags["gradmm.result_key"] for r in results}) == 3
    live = {r.data.tags["method"]: r for r in results if r.data.tags.get("gradmm.live") == "true"}
    assert sorted(live) == ["gradmm", "random_real"]  # the fine-tuned ones; zero_shot was logged by the report
    for run in live.values():
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss/lr_0.001")] == [0, 1]
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2 and "accuracy" in run.data.metrics
        assert "trainset" in [a.path for a in client.list_artifacts(run.info.run_id)]
        assert run.info.status == "FINISHED" and run.info.end_time > run.info.start_time


@pytest.mark.e2e
def test_dvc_pipeline_runs_once_and_only_reruns_what_changed(tmp_path):
    for name in ("gradmm", "notebooks"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb_checkpoints"))
    # The quality study's cells ran outside the pipeline; its report stages read the committed cells
    # (studies/quality, studies/quality-fast), which this scratch project does not have; nor what those stages
    # write (e.g. the gradient-agreement tables its report reads).
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    missing = ["studies/quality"]
    while True:
        # a foreach stage keeps its deps and outs under `do`
        dropped = {name: s for name, s in stages["stages"].items()
                   if any(str(d).startswith(m) for d in s.get("do", s).get("deps", []) for m in missing)}
        if not dropped:
            break
        stages["stages"] = {name: s for name, s in stages["stages"].items() if name not in dropped}
        missing += [str(next(iter(o)) if isinstance(o, dict) else o).split("${")[0].rstrip("/")
                    for s in dropped.values() for o in s.get("do", s).get("outs", [])]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n"
                                                for e in toy_examples(30)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    _run(["git", "init", "-q"], tmp_path)
    _run(["dvc", "init", "-q"], tmp_path)
    _run(["dvc", "repro"], tmp_path)
    for method in ("zero_shot", "random_real", "gradmm"):
        result = json.loads((tmp_path / "runs/local/results" / f"{method}-n2-seed0.json").read_text())
        assert 0 <= result["test_accuracy"] <= 1 and result["method"] == method
    study = (tmp_path / "reports/tables/variants.csv").read_text()  # the variants study ran too
    assert study.count("gradmm_joint") == 2 and study.count("random_real") == 2 and study.count("gradmm_converge") == 2
    membership = (tmp_path / "reports/tables/membership.csv").read_text()  # the privacy attacks and transfer too
    assert "full_real" in membership and "random_real" in membership
    assert "gradmm_joint" in (tmp_path / "reports/tables/transfer.csv").read_text()
    assert not (tmp_path / "runs" / "study").exists()  # the quick job's `runs` dependency holds no study cell
    _check_mlflow_runs(tmp_path)
    assert "up to date" in _run(["dvc", "repro"], tmp_path)

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["generate"]["rho"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    status = _run(["dvc", "status", "--json"], tmp_path)
    changed = set(json.loads(status))
    assert "generate@local-gradmm-0" in changed  # filter and finetune follow once its output changes
    assert not any(s.startswith(("prepare", "baseline")) for s in changed)
    assert "finetune@local-random_real-2-0" not in changed
    assert "study@local-gradmm_joint" in changed and "study@local-random_real" in changed  # both read `generate`

    params["generate"]["rho"] = 0.1  # back, and the faithful variant's own settings edited instead
    params["variants"]["gradmm"] = {"generate": {"center": True}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    changed = set(json.loads(_run(["dvc", "status", "--json"], tmp_path)))
    assert {"generate@local-gradmm-0", "filter@local-gradmm-2-0"} <= changed
    assert not any(s.startswith(("prepare", "baseline", "finetune", "report")) for s in changed)
