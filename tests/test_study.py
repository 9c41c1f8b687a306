"""The variants study on the tiny model: a cell runs, resumes, refuses bad input, and reports."""

import json

import pytest
import yaml

from gradmm.cli import main
from gradmm.config import StudyConfig
from gradmm.core.data import TEMPLATES, Task, write_task
from gradmm.experiments.variants import check_study, method_overrides, screen_config
from gradmm.reporting.variants import collect
from tests.conftest import toy_examples

PARAMS = {
    "model": {"name": "tiny-random", "device": "cpu"},
    "generate": {"batch_size": 2, "outer_steps": 2, "inner_steps": 2, "topk": 20, "init_candidates": 2,
                 "max_seq_len": 10},
    "filter": {"label_filter": False},
    "finetune": {"learning_rates": [1.0e-3], "steps": 2, "batch_size": 2},
    "experiment": {"llm_shots": 1},
    "study": {"datasets": ["toy"], "n_per_class": [2], "raw_per_class": 4, "generation_seeds": [0], "seeds": [0, 1],
              "methods": ["zero_shot", "random_real", "gradmm", "gradmm_converge"], "generate": {"outer_steps": 1},
              "finetune": {"learning_rates": [1.0e-3, 1.0e-2]}, "diagnostics_sets": 1},
}


@pytest.fixture
def project(tmp_path):
    rows = toy_examples(30)
    write_task(Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:40], rows[40:]),
               tmp_path / "task")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return tmp_path


def _study(project, method, *extra):
    return main(["study", "--params", str(project / "params.yaml"), "--task", str(project / "task"),
                 "--method", method, "--out", str(project / "study" / "toy" / method), *extra])


def test_a_gradmm_cell_generates_once_and_finetunes_every_seed(project):
    assert _study(project, "gradmm") == 0
    cell = project / "study" / "toy" / "gradmm"
    results = [json.loads((cell / f"result-n2-g0-s{s}.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in results] == [0, 1]
    assert all(r["train_file"] == "trainset-n2-g0.jsonl" and r["dev_accuracies"].keys() == {"0.001", "0.01"}
               for r in results)  # one generated set, the study's LR grid picked on dev
    assert json.loads((cell / "generated-g0" / "run_config.json").read_text())["generate"]["outer_steps"] == 1
    diag = json.loads((cell / "diagnostics-g0.json").read_text())
    assert len(diag["targets"]) == 2 and 0 < diag["targets"][0]["label_word_probability"] < 1
    stamp = (cell / "result-n2-g0-s0.json").stat().st_mtime_ns
    assert _study(project, "gradmm") == 0  # resumed: nothing redone
    assert (cell / "result-n2-g0-s0.json").stat().st_mtime_ns == stamp


def test_a_variant_keeps_its_own_settings_over_the_study_schedule():
    cfg = StudyConfig(generate={"inner_steps": 3, "rho": 0.5}, raw_per_class=6)
    ov = method_overrides("gradmm_converge", cfg, generation_seed=2)
    assert ov.index("generate.rho=0.5") < ov.index("generate.rho=0.05")  # later wins: the variant's ρ
    assert ov[-2:] == ["generate.n_per_class=6", "generate.seed=2"]


def test_baselines_and_zero_shot_cells_and_the_report(project):
    assert _study(project, "random_real") == 0 and _study(project, "zero_shot") == 0
    cell = project / "study" / "toy" / "random_real"
    assert (cell / "trainset-n2-s0.jsonl").is_file() and (cell / "trainset-n2-s1.jsonl").is_file()  # a subset per seed
    assert len(list((project / "study" / "toy" / "zero_shot").glob("result-*.json"))) == 1  # deterministic
    assert _study(project, "gradmm_converge") == 0
    assert main(["study-report", "--runs", str(project / "study"), "--reports", str(project / "reports"),
                 "--params", str(project / "params.yaml")]) == 0
    df = collect(project / "study")
    assert sorted(df.method.unique()) == ["gradmm_converge", "random_real", "zero_shot"] and len(df) == 5
    md = (project / "reports" / "tables" / "variants.md").read_text()
    assert "gradmm_converge" in md and "Diagnostics" in md
    assert (project / "reports" / "figures" / "variants.png").stat().st_size > 1000
    from mlflow.tracking import MlflowClient  # one MLflow run per result, with the variant's diagnostics

    from gradmm.reporting.tracking import tracking_uri

    client = MlflowClient(tracking_uri(project))  # the store the report wrote to (MLFLOW_TRACKING_URI wins)
    runs = client.search_runs([client.get_experiment_by_name("variants_study").experiment_id])
    assert len(runs) == 5
    conv = [r for r in runs if r.data.tags["method"] == "gradmm_converge"][0]
    assert conv.data.params["generate.order"] == "proximal" and "diag_changed_fraction_last" in conv.data.metrics


def test_editing_the_classification_lists_keeps_a_finished_cell(project):
    assert _study(project, "random_real") == 0
    cell = project / "study" / "toy" / "random_real"
    stamp = (cell / "result-n2-g0-s0.json").stat().st_mtime_ns
    assert _study(project, "random_real", "--set", 'experiment.methods=["random_real", "gradmm_plus"]',
                  "--set", "experiment.n_per_class=7") == 0
    assert not (project / "study" / "toy" / ".archive").exists()
    assert (cell / "result-n2-g0-s0.json").stat().st_mtime_ns == stamp
    assert _study(project, "random_real", "--set", "experiment.coreset_features=lm") == 0  # a key the cell uses
    assert (project / "study" / "toy" / ".archive").is_dir()


def test_the_screen_replaces_datasets_budgets_and_methods_only(project, capsys):
    cfg = StudyConfig(seeds=[3], screen={"methods": ["zero_shot"], "n_per_class": [1]})
    scr = screen_config(cfg)
    assert scr.methods == ["zero_shot"] and scr.n_per_class == [1] and scr.seeds == [3] and scr.screen == {}
    with pytest.raises(ValueError, match="study.screen keys \\['seeds'\\]"):
        screen_config(StudyConfig(screen={"seeds": [1]}))
    screen = '--set=study.screen={"methods": ["zero_shot"], "n_per_class": [1]}'
    assert _study(project, "zero_shot", screen, "--screen") == 0
    assert [p.name for p in (project / "study" / "toy" / "zero_shot").glob("result-*")] == ["result-n1-g0-s0.json"]
    assert _study(project, "random_real", screen, "--screen") == 2
    assert "not in study.screen.methods" in capsys.readouterr().err


def test_bad_study_input_fails_before_any_work(project, capsys):
    assert _study(project, "herding") == 2  # not in study.methods
    assert "not in study.methods" in capsys.readouterr().err
    assert _study(project, "gradmm", "--set", 'study.methods=["gradmm", "magic"]') == 2
    assert "'magic'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="raw_per_class"):
        check_study(StudyConfig(n_per_class=[10], raw_per_class=5))
    with pytest.raises(ValueError, match="study.generate keys"):
        check_study(StudyConfig(generate={"steps": 3}))
    assert not (project / "study").exists()


def test_overrides_read_exponent_floats_as_numbers():
    from gradmm.config import parse_overrides

    ov = parse_overrides(["finetune.learning_rates=[5e-05, 0.0001]", "generate.lr=1e-3", "data.dataset=imdb",
                          "generate.center=true", "data.label_names=[neg, pos]"])
    assert ov["finetune"]["learning_rates"] == [5e-05, 1e-4] and ov["generate"]["lr"] == 1e-3
    assert ov["data"] == {"dataset": "imdb", "label_names": ["neg", "pos"]} and ov["generate"]["center"] is True


def _runs(rows):
    import pandas as pd

    return pd.DataFrame([{"dataset": d, "model": "m", "n_per_class": n, "method": m, "seed": s, "accuracy": a,
                          "dev_accuracy": dev, "majority_share": 0.5, "n_train": 4, "wall_seconds": 1.0}
                         for d, n, m, accs, dev in rows for s, a in enumerate(accs)])


def test_the_dev_pick_uses_dev_only_and_the_variants_of_the_widest_grid():
    from gradmm.reporting.variants import comparisons, dev_pick, summary

    df = _runs([("a", 10, "gradmm", [0.9, 0.9], 0.60), ("a", 10, "gradmm_review", [0.5, 0.5], 0.70),
                ("b", 10, "gradmm", [0.9, 0.9], 0.60), ("b", 10, "gradmm_review", [0.5, 0.5], 0.70),
                ("a", 10, "gradmm_joint", [0.9, 0.9], 0.99),  # screened on one panel only: not a candidate
                ("a", 10, "gradmm_plus", [0.9, 0.9], 0.99), ("b", 10, "gradmm_plus", [0.9, 0.9], 0.99),
                ("a", 10, "llm_zero_shot_gen", [0.6, 0.8], 0.99), ("b", 10, "llm_zero_shot_gen", [0.6, 0.8], 0.99)])
    assert dev_pick(summary(df)) == "gradmm_review"  # the better test accuracy of gradmm plays no part
    comp = comparisons(df).set_index(["dataset", "method"])
    assert comp.loc[("a", "gradmm"), "diff_llm_zero_shot_gen"] == pytest.approx(0.2)
    assert 0 < comp.loc[("a", "gradmm"), "p_llm_zero_shot_gen"] < 1 and "diff_random_real" not in comp
    assert dev_pick(summary(df[df.method == "llm_zero_shot_gen"])) is None


def test_gradmm_plus_is_the_committed_studys_dev_pick():
    """gradmm_plus carries the settings of the variant that the committed study (reports/tables/variants.csv)
    picks on dev: rerunning the study and changing the pick without updating gradmm_plus fails here."""
    from pathlib import Path

    import pandas as pd

    from gradmm.methods.registry import GENERATORS
    from gradmm.reporting.variants import dev_pick, summary

    table = Path(__file__).resolve().parent.parent / "reports" / "tables" / "variants.csv"
    pick = dev_pick(summary(pd.read_csv(table)))
    assert pick is not None and GENERATORS["gradmm_plus"] == GENERATORS[pick], pick


def test_the_seed_spread_separates_generated_sets_from_fine_tuning_seeds():
    import pandas as pd

    from gradmm.reporting.variants import markdown, seed_spread, summary

    # set means 0.6, 0.7, 0.8 (sd 0.1 between sets); within each set ±0.02 around its mean (sd 0.02)
    rows = [{"dataset": "a", "n_per_class": 20, "method": "gradmm_select", "generation_seed": g, "seed": s,
             "accuracy": m + d, "dev_accuracy": m, "majority_share": 0.5, "n_train": 40, "wall_seconds": 1.0,
             "model": "x", "empty_trainset": False}
            for g, m in enumerate([0.6, 0.7, 0.8]) for s, d in enumerate([-0.02, 0.0, 0.02])]
    df = pd.DataFrame(rows)
    r = seed_spread(df).iloc[0]
    assert r.sets == 3 and r["mean"] == pytest.approx(0.7)
    assert r.sd_between_sets == pytest.approx(0.1) and r.sd_within_set == pytest.approx(0.02)
    assert r.ci95_low == pytest.approx(0.7 - 4.302653 * 0.1 / 3 ** 0.5, abs=1e-5) and r.ci95_high > 0.9
    one_set = seed_spread(df[df.generation_seed == 0]).iloc[0]
    assert one_set.ci95_low != one_set.ci95_low  # NaN: one set gives no interval over sets
    md = markdown(summary(df), pd.DataFrame(), None, "Quality study", seed_spread(df))
    assert "## Seed spread" in md and "| a | 20 | gradmm_select | 3 | 70.0 | 10.0 | 2.0 | 45.2 – 94.8 |" in md


def test_health_of_an_lm_text_cell_reports_the_unmatched_start(tmp_path):
    import json

    from gradmm.reporting.variants import health

    gen = tmp_path / "toy" / "gradmm_select" / "generated-g0"
    gen.mkdir(parents=True)
    (gen / "history.jsonl").write_text("")
    classes = [{"f_Z": [0.4, 0.6], "mean_log_perplexity": 4.0, "f_init_candidates": [[0.9, 0.5], [0.7, 0.8]]},
               {"f_Z": [0.2, 0.2], "mean_log_perplexity": 5.0, "f_init_candidates": [[0.5, 0.3], [0.3, 0.4]]}]
    (gen / "generate_metrics.json").write_text(json.dumps({"classes": classes}))
    row = health(tmp_path).iloc[0]
    assert row.f_Z_last == pytest.approx(0.35) and row.logppl_Z_last == pytest.approx(4.5)
    assert row.f_Z_unmatched == pytest.approx((0.9 + 0.7 + 0.5 + 0.3) / 4)
    # a study whose only generated cells are LM text has no ADMM columns: the diagnostics table leaves them blank
    import pandas as pd

    from gradmm.reporting.variants import markdown

    md = markdown(pd.DataFrame(columns=["dataset", "n_per_class", "method", "runs", "n_train", "mean", "std",
                                        "empty_runs", "dev_mean", "majority_share"]), health(tmp_path))
    assert "| toy | gradmm_select |  |  |  | 0.0 |  |  |  | 0.350 | 0.600 |  |  | 4.50 |" in md


def test_compare_cells_puts_one_cell_of_two_studies_side_by_side(tmp_path, capsys):
    """`gradmm compare-cells`: the same cell from two study folders, each with its seed spread, mean f(Z), dtype
    and Welch's p against the first; a label without a folder is refused by name."""
    import pandas as pd

    from gradmm.io.records import write_json

    def cell(study, accs, f_Z, dtype, method="gradmm"):
        folder = tmp_path / study / "toy" / method
        for g, acc in enumerate(accs):
            for s, d in enumerate([-0.01, 0.01]):
                write_json(folder / f"result-n20-g{g}-s{s}.json", {
                    "dataset": "toy", "model": "x", "method": method, "n_per_class": 20, "generation_seed": g,
                    "seed": s, "test_accuracy": acc + d, "dev_accuracy": acc - 0.01 + d,
                    "n_train": 40 if study == "a" else 30,
                    "test_prediction_shares": [0.4, 0.6] if study == "a" else [0.7, 0.3]})
            write_json(folder / f"generated-g{g}" / "generate_metrics.json", {"classes": [{"f_Z": [f_Z, f_Z]}]})
            write_json(folder / f"generated-g{g}" / "run_config.json", {"model": {"dtype": dtype}})

    cell("a", [0.70, 0.72, 0.74], 0.5, "float32")
    cell("b", [0.50, 0.52, 0.54], 0.4, "bfloat16")
    out = tmp_path / "cmp.csv"
    assert main(["compare-cells", f"fp32={tmp_path / 'a'}", f"fast={tmp_path / 'b'}", "--dataset", "toy",
                 "--method", "gradmm", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table.cell.tolist() == ["fp32", "fast"]
    assert table["mean"].tolist() == pytest.approx([0.72, 0.52])
    assert table.sd_between_sets.tolist() == pytest.approx([0.02, 0.02])
    assert table.f_Z_mean.tolist() == pytest.approx([0.5, 0.4]) and table.model_dtype.tolist() == ["float32", "bfloat16"]
    assert table.dev_mean.tolist() == pytest.approx([0.71, 0.51]) and table.texts_mean.tolist() == [40, 30]
    assert table.majority_share_mean.tolist() == pytest.approx([0.6, 0.7])
    assert table.welch_p_vs_first.isna().tolist() == [True, False] and table.welch_p_vs_first[1] < 0.001
    assert table.method.tolist() == ["gradmm", "gradmm"]
    # paired by generation seed: every set of b trains 20 points under a's set of the same seed
    assert table.paired_gain_vs_first.isna()[0] and table.paired_gain_vs_first[1] == pytest.approx(-20)
    assert table.paired_gains_vs_first[1] == "-20.0; -20.0; -20.0"
    cell("c", [0.60, 0.62, 0.64], 0.3, "float32", method="gradmm_select")  # another method, named per study
    assert main(["compare-cells", f"fp32={tmp_path / 'a'}", f"select={tmp_path / 'c'}@gradmm_select", "--dataset", "toy",
                 "--method", "gradmm", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table.method.tolist() == ["gradmm", "gradmm_select"] and table["mean"].tolist() == pytest.approx([0.72, 0.62])
    for study, dtype in (("a", "float32"), ("b", "bfloat16")):  # a baseline cell: its own record's dtype
        cell(study, [0.80, 0.82, 0.84], float("nan"), dtype, method="random_real")
        for g in range(3):
            (tmp_path / study / "toy" / "random_real" / f"generated-g{g}" / "run_config.json").unlink()
        write_json(tmp_path / study / "toy" / "random_real" / "run_config.json", {"model": {"dtype": dtype}})
    assert main(["compare-cells", f"fp32={tmp_path / 'a'}", f"bf16={tmp_path / 'b'}", "--dataset", "toy",
                 "--method", "random_real", "--out", str(out)]) == 0
    assert pd.read_csv(out).model_dtype.tolist() == ["float32", "bfloat16"]
    capsys.readouterr()
    assert main(["compare-cells", f"x={tmp_path / 'c'}@magic", "--dataset", "toy", "--method", "gradmm"]) == 2
    assert "'magic'" in capsys.readouterr().err
    assert main(["compare-cells", f"fp32={tmp_path / 'missing'}", "--dataset", "toy", "--method", "gradmm"]) == 2
    err = capsys.readouterr().err
    assert "LABEL=FOLDER" in err and "missing" in err and "Traceback" not in err
