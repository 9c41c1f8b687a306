"""The transfer study on tiny models: the study's sets (tiny-random) fine-tune another model and the MiniLM probe."""


import numpy as np
import pytest
import yaml

from gradmm.cli import main
from gradmm.config import TransferConfig
from gradmm.core.data import TEMPLATES, Example, Task
from gradmm.experiments.transfer import check_transfer, probe_result
from gradmm.reporting.transfer import collect
from tests.test_study import PARAMS, _study, project  # noqa: F401 (the fixture)

TRANSFER = {"datasets": ["toy"], "targets": ["tiny-random-untied", "minilm"], "n_per_class": 2,
            "methods": ["zero_shot", "random_real", "gradmm"], "seeds": [0, 1], "finetune": {"learning_rates": [1.0e-3]}}


def _transfer(project, target, *extra):
    return main(["transfer", "--params", str(project / "params.yaml"), "--task", str(project / "task"), "--target",
                 target, "--study", str(project / "study"), "--out", str(project / "transfer" / "toy" / target), *extra])


@pytest.fixture
def transferred(project):  # noqa: F811
    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "transfer": TRANSFER}))
    assert _study(project, "gradmm") == 0
    assert _transfer(project, "tiny-random-untied") == 0 and _transfer(project, "minilm") == 0
    return project


def test_a_causal_target_and_the_probe_learn_from_the_source_sets(transferred):
    df = collect(transferred / "transfer")
    runs = df.groupby(["target", "method"]).size().to_dict()
    assert runs == {("tiny-random-untied", "zero_shot"): 1, ("tiny-random-untied", "random_real"): 2,
                    ("tiny-random-untied", "gradmm"): 2, ("minilm", "random_real"): 2, ("minilm", "gradmm"): 1}
    assert set(df[df.method == "gradmm"].source) == {"tiny-random"} and set(df[df.method == "random_real"].source) == {"real"}
    assert df.accuracy.between(0, 1).all()
    cell = transferred / "transfer" / "toy" / "minilm" / "gradmm"
    stamp = (cell / "result-s0.json").stat().st_mtime_ns
    assert _transfer(transferred, "minilm") == 0  # resumed
    assert (cell / "result-s0.json").stat().st_mtime_ns == stamp
    assert main(["transfer-report", "--runs", str(transferred / "transfer"), "--reports", str(transferred / "reports")]) == 0
    assert "| toy | minilm | 2 | gradmm | 1 |" in (transferred / "reports" / "tables" / "transfer.md").read_text()
    assert (transferred / "reports" / "figures" / "transfer.png").stat().st_size > 1000
    # the source model's own results on the same sets join as one more target column
    assert main(["transfer-report", "--runs", str(transferred / "transfer"), "--reports", str(transferred / "reports"),
                 "--study", str(transferred / "study"), "--params", str(transferred / "params.yaml")]) == 0
    md = (transferred / "reports" / "tables" / "transfer.md").read_text()
    assert "| toy | tiny-random | 2 | gradmm | 2 |" in md
    assert "| method | minilm | tiny-random | tiny-random-untied |" in md
    # a second direction (e.g. the reverse transfer) gets its own files beside the first's
    assert main(["transfer-report", "--runs", str(transferred / "transfer"), "--reports", str(transferred / "reports"),
                 "--name", "transfer_reverse"]) == 0
    assert (transferred / "reports" / "tables" / "transfer_reverse.md").read_text().startswith("# Transfer")
    assert (transferred / "reports" / "tables" / "transfer.md").read_text() == md


def test_the_probe_picks_c_on_dev_and_scores_test():
    rows = lambda k: [Example(f"good {i}" if i % 2 else f"bad {i}", i % 2) for i in range(k)]  # noqa: E731
    task = Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows(10), rows(6), rows(8))
    embed = lambda texts: np.array([[1.0, 0.0] if t.startswith("good") else [0.0, 1.0] for t in texts])  # noqa: E731
    train = [{"text": ex.text, "label": ex.label} for ex in rows(4)]
    r = probe_result(train, task, [0.1, 10.0], embed)
    assert r["test_accuracy"] == 1.0 and r["best_c"] == 0.1 and r["test_prediction_shares"] == [0.5, 0.5]
    one_class = probe_result([t for t in train if t["label"] == 1], task, [1.0], embed)
    assert one_class["test_accuracy"] == 0.5 and one_class["best_c"] is None  # it can only predict that class


def test_bad_transfer_input_fails_before_any_work(project, capsys):  # noqa: F811
    with pytest.raises(ValueError, match="transfer.methods \\['magic'\\]"):
        check_transfer(TransferConfig(methods=["magic"]))
    with pytest.raises(ValueError, match="probe_c"):
        check_transfer(TransferConfig(probe_c=[0.0]))
    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "transfer": TRANSFER}))
    assert _transfer(project, "gemma3-270m") == 2  # not a configured target
    assert "not in transfer.targets" in capsys.readouterr().err
    assert _transfer(project, "minilm") == 2  # the study's gradmm set is missing
    assert "gradmm study --method gradmm" in capsys.readouterr().err
    assert not (project / "transfer").exists()


@pytest.mark.e2e
def test_nbval_runs_the_transfer_notebook_with_two_tiny_models(project):  # noqa: F811
    """nbval on the committed notebook with tiny parameters injected: source tiny-random (the study), target
    tiny-random-untied, in a throw-away project."""
    import os
    import subprocess
    import sys

    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from tests.test_notebooks import ROOT

    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "transfer": TRANSFER}))
    assert _study(project, "gradmm") == 0
    (project / "runs" / "toy").mkdir(parents=True)
    (project / "task").rename(project / "runs" / "toy" / "data")
    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "03_transfer.ipynb")),
                               {"study_dir": "study", "targets": ["tiny-random-untied"], "progress": False})
    path = project / "03_transfer.ipynb"
    nbformat.write(nb, path)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                          "--rootdir", str(project), str(path)], cwd=project, env=dict(os.environ),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    df = collect(project / "studies" / "transfer")
    assert set(df.target) == {"tiny-random-untied"} and set(df.source) == {"tiny-random", "real"}
    assert (project / "reports" / "figures" / "transfer.png").is_file()
