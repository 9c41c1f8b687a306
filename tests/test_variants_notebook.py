"""notebooks/04_variants.ipynb executed with papermill on a tiny study written by hand: the result and diagnostics
files that gradmm.reporting.variants reads, no model and no fine-tuning, so it runs in seconds."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (method, test accuracies over seeds 0 and 1, dev accuracy): a GRADMM variant, the ablation and two references
CELLS = [("gradmm", [0.60, 0.70], 0.65), ("gradmm_centered", [0.65, 0.75], 0.72),
         ("gradmm_no_matching", [0.50, 0.55], 0.52), ("llm_zero_shot_gen", [0.55, 0.60], 0.58),
         ("random_real", [0.70, 0.80], 0.75)]


def write_study(study: Path) -> None:
    """<study>/toy/<method>/result-n2-g0-s<S>.json per cell and seed; the GRADMM cells also get the ADMM history
    and the target diagnostics that the report's health table reads."""
    for method, accuracies, dev in CELLS:
        cell = study / "toy" / method
        cell.mkdir(parents=True)
        for seed, acc in enumerate(accuracies):
            result = {"dataset": "toy", "model": "tiny-random", "method": method, "n_per_class": 2,
                      "generation_seed": 0, "seed": seed, "test_accuracy": acc, "dev_accuracy": dev,
                      "best_lr": 1e-3, "test_prediction_shares": [0.4, 0.6], "n_train": 4, "wall_seconds": 1.0,
                      "train_file": "trainset-n2-g0.jsonl"}
            (cell / f"result-n2-g0-s{seed}.json").write_text(json.dumps(result))
        if method.startswith("gradmm"):
            (cell / "generated-g0").mkdir()
            match = 0.0 if method == "gradmm_no_matching" else 0.2
            history = [{"class": c, "batch": 0, "t": t, "f_Z": 0.1, "changed_fraction": 0.5, "logppl_Z": 9.0,
                        "grad_norm_match": match, "grad_norm_penalty": 50.0} for c in (0, 1) for t in (0, 1)]
            (cell / "generated-g0" / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
            target = {"margin_mean": 0.01, "margin_ci95": [0.005, 0.015], "label_word_probability": 0.002,
                      "synthetic": [0.12, 0.13], "real_same": [0.009, 0.008]}
            (cell / "diagnostics-g0.json").write_text(json.dumps({"targets": [target, target]}))


def test_variants_notebook_writes_and_shows_the_report(tmp_path):
    import nbformat
    import papermill as pm

    write_study(tmp_path / "study")
    reports = tmp_path / "reports"
    out = tmp_path / "04_variants.ipynb"
    # cwd=tmp_path holds no params.yaml, so the notebook's chdir to the project root stays there; absolute
    # paths all the same, and no MLflow, so nothing is written outside tmp_path
    pm.execute_notebook(ROOT / "notebooks" / "04_variants.ipynb", out, cwd=str(tmp_path), kernel_name="python3",
                        progress_bar=False, parameters={"study_dir": str(tmp_path / "study"),
                                                        "reports_dir": str(reports), "log_mlflow": False})

    md = (reports / "tables" / "variants.md").read_text()
    assert "| toy | 2 | gradmm_centered | 2 |" in md
    assert (reports / "tables" / "variants.csv").is_file() and (reports / "tables" / "variants_health.csv").is_file()
    assert (reports / "figures" / "variants.png").stat().st_size > 1000
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()

    shown = "\n".join(
        "".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        + "".join(o.get("text", "")) for cell in nbformat.read(out, as_version=4).cells if cell.cell_type == "code"
        for o in cell.outputs)
    assert "| dataset | n | method | runs | texts | test mean ± std | dev mean | majority |" in shown  # the table
    assert "image/png" in json.dumps([c.get("outputs", []) for c in nbformat.read(out, as_version=4).cells])
    assert "dev pick: gradmm_centered" in shown  # best dev among the candidates (the ablation is none)
    assert "diff_random_real" in shown and "diff_llm_zero_shot_gen" in shown  # the comparison table
