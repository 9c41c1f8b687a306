"""gradmm.reporting.classification (tables, figures, generation health) and gradmm.reporting.tracking (MLflow, never fatal) on hand-made files."""

import json
import warnings

import pandas as pd
import pytest

from gradmm.experiments.classification import experiment_settings
from gradmm.methods.registry import generator_of
from gradmm.reporting import classification as report
from gradmm.reporting import tracking

PNG = b"\x89PNG\r\n\x1a\n"


def write_result(runs, dataset, method, seed, acc, shares=(0.5, 0.5), n=5, model="tiny-random", **extra):
    path = runs / dataset / "results" / f"{method}-n{n}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"test_accuracy": acc, "test_prediction_shares": list(shares), "method": method, "seed": seed,
              "dataset": dataset, "model": model, "n_per_class": n, "wall_seconds": 1.5,
              "n_train": 0 if method == "zero_shot" else 2 * n, "finetuned": method != "zero_shot",
              "train_file": f"runs/{dataset}/trainsets/{method}-n{n}-seed{seed}.jsonl", **extra}
    if method != "zero_shot":
        result.update(dev_accuracy=acc - 0.05, best_lr=5e-5)
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    for seed, acc in enumerate([0.6, 0.7, 0.8]):  # mean 0.7, sample std 0.1
        write_result(runs, "tweets", "gradmm", seed, acc, shares=(0.4, 0.6))
    for seed in (1, 0):
        write_result(runs, "tweets", "zero_shot", seed, 0.5, shares=(1.0, 0.0))
    write_result(runs, "tweets", "full_real", 0, 0.9)
    write_result(runs, "tweets", "random_real", 0, 0.65)
    write_result(runs, "rtpolarity", "gradmm", 0, 0.75, shares=(0.2, 0.8))
    return runs


def test_collect_results_columns_and_values(runs):
    df = report.collect_results(runs)
    assert len(df) == 8
    for col in report.TABLE_COLUMNS + ["dev_accuracy", "best_lr", "n_train", "finetuned", "share_0", "share_1"]:
        assert col in df.columns
    row = df[(df.dataset == "tweets") & (df.method == "gradmm") & (df.seed == 2)].iloc[0]
    assert row.accuracy == 0.8 and row.share_1 == 0.6 and row.dev_accuracy == pytest.approx(0.75)
    assert pd.isna(df[df.method == "zero_shot"].dev_accuracy).all()  # no fine-tuning: no dev selection
    assert set(report.collect_results(runs, ["rtpolarity"]).dataset) == {"rtpolarity"}
    assert report.collect_results(runs, ["absent"]).empty
    assert report.collect_results(runs.parent / "nothing").empty


def test_classification_csv_columns_and_order(runs, tmp_path):
    df = report.collect_results(runs)
    path = tmp_path / "tables" / "classification.csv"
    report.write_classification_table(df.sample(frac=1, random_state=1), path)  # input order does not matter
    table = pd.read_csv(path)
    assert list(table.columns) == ["dataset", "model", "method", "n_per_class", "seed", "accuracy", "wall_seconds"]
    tweets = table[table.dataset == "tweets"]
    assert list(dict.fromkeys(tweets.method)) == ["zero_shot", "random_real", "gradmm", "full_real"]
    assert list(tweets[tweets.method == "zero_shot"].seed) == [0, 1]
    first = path.read_bytes()
    report.write_classification_table(df, path)
    assert path.read_bytes() == first  # deterministic


def test_summary_mean_std_over_seeds(runs):
    summary = report.summary_table(report.collect_results(runs))
    g = summary[(summary.dataset == "tweets") & (summary.method == "gradmm")].iloc[0]
    assert g.accuracy_mean == pytest.approx(0.7) and g.accuracy_std == pytest.approx(0.1)  # ddof = 1
    assert g.n_seeds == 3 and g.majority_share == pytest.approx(0.6)
    z = summary[(summary.dataset == "tweets") & (summary.method == "zero_shot")].iloc[0]
    assert z.accuracy_std == 0 and z.majority_share == 1.0
    one = summary[summary.dataset == "rtpolarity"].iloc[0]
    assert one.n_seeds == 1 and pd.isna(one.accuracy_std)


def test_markdown_summary(runs):
    md = report.markdown_summary(report.collect_results(runs))
    assert "70.0 ± 10.0" in md and "50.0 ± 0.0" in md and "75.0 ± –" in md
    assert "| method | rtpolarity | tweets |" in md
    lines = md.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"| {m} |"))
             for m in ("zero_shot", "random_real", "gradmm", "full_real")]
    assert order == sorted(order)
    assert "No results yet" in report.markdown_summary(report.collect_results(runs, ["absent"]))
    for seed, n_train in enumerate([22, 30, 30]):  # filtered sets differ in size from seed to seed
        write_result(runs, "tweets", "llm_zero_shot_gen", seed, 0.7, n_train=n_train)
    row = next(line for line in report.markdown_summary(report.collect_results(runs)).splitlines()
               if line.startswith("| tweets | tiny-random | 5 | llm_zero_shot_gen |"))
    assert row.split(" | ")[8] == "27.3"  # the mean size, rounded


def test_method_order():
    methods = ["full_real", "gradmm_dp", "gradmm_new_variant", "gradmm", "kcenter", "zero_shot", "mystery",
               "llm_few_shot_gen", "few_shot"]
    assert report.ordered_methods(methods) == ["zero_shot", "few_shot", "kcenter", "llm_few_shot_gen", "gradmm",
                                               "gradmm_dp", "gradmm_new_variant", "full_real", "mystery"]


def test_missing_results_and_select(runs):
    missing = report.missing_results(runs, ["tweets"], ["gradmm", "herding"], [0, 3], "tiny-random", [5])
    assert missing == [("tweets", "gradmm", 5, 3), ("tweets", "herding", 5, 0), ("tweets", "herding", 5, 3)]
    assert len(report.missing_results(runs, ["tweets"], ["gradmm"], [0], "smollm2-135m", [5])) == 1  # other model
    assert report.missing_results(runs, ["tweets"], ["gradmm"], [0], "tiny-random", [5, 20]) == [("tweets", "gradmm", 20, 0)]
    path = write_result(runs, "tweets", "gradmm", 0, 0.5, n=20)
    path.write_text(json.dumps({**json.loads(path.read_text()), "n_per_class": 5}))  # made at another budget
    assert report.missing_results(runs, ["tweets"], ["gradmm"], [0], "tiny-random", [20]) == [("tweets", "gradmm", 20, 0)]
    write_result(runs, "tweets", "gradmm", 0, 0.9, n=20)
    df = report.select(report.collect_results(runs), ["tweets"], ["gradmm", "zero_shot"], [0, 1], "tiny-random", [5])
    assert len(df) == 4 and set(df.method) == {"gradmm", "zero_shot"}
    both = report.select(report.collect_results(runs), ["tweets"], ["gradmm"], [0], "tiny-random", [5, 20])
    assert sorted(both.n_per_class) == [5, 20]


def test_experiment_settings_fall_back_to_params():
    params = {"experiment": {"datasets": ["tweets"], "methods": ["gradmm"], "seeds": [0, 1], "n_per_class": 5},
              "model": {"name": "smollm2-135m"}}
    s = experiment_settings(params, datasets=["rtpolarity"])
    assert s == {"datasets": ["rtpolarity"], "methods": ["gradmm"], "seeds": [0, 1], "model": "smollm2-135m",
                 "n_per_class": [5]}  # a single budget is a grid of one
    with pytest.raises(ValueError, match="seeds"):
        experiment_settings({}, ["a"], ["b"], None, "m", 1)


def test_classification_figure_written(runs, tmp_path):
    df = report.collect_results(runs)
    path = tmp_path / "figures" / "classification.png"
    report.plot_classification(df, path)
    assert path.read_bytes()[:8] == PNG
    import numpy as np
    np.random.seed(123)  # whatever the global generator's state, a rerun draws the same figure
    report.plot_classification(df, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == path.read_bytes()
    report.plot_classification(df.iloc[:0], tmp_path / "empty.png")  # no results: still a figure
    assert (tmp_path / "empty.png").is_file()


def write_history(run_dir, projection=True):
    run_dir.mkdir(parents=True)
    rows = []
    for c in (0, 1):
        for b in (0, 1):
            for t in range(3):
                rec = {"class": c, "batch": b, "t": t, "rho": 0.1, "f_X": 0.1 / (t + 1), "grad_norm_match": 0.3,
                       "grad_norm_penalty": 0.05 * t}
                if projection:
                    rec.update(f_Z=0.2 / (t + 1), changed_fraction=1 / (t + 1), logppl_Z=5.0 - t,
                               primal_residual=0.5, dual_residual=0.1, dual_norm=0.1)
                rows.append(rec)
    (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    classes = [{"class": "negative"}, {"class": "positive"}]
    (run_dir / "generate_metrics.json").write_text(json.dumps({"classes": classes}))


def test_generation_diagnostics_and_health_figure(tmp_path):
    runs = tmp_path / "runs"
    write_history(runs / "tweets" / "generated" / "gradmm-seed0")
    write_history(runs / "tweets" / "generated" / "gradmm_no_projection-seed0", projection=False)
    dirs = report.generation_run_dirs(runs, ["tweets", "absent"])
    assert [d.name for d in dirs] == ["gradmm-seed0", "gradmm_no_projection-seed0"]
    for run_dir in dirs:
        df = report.generation_diagnostics(run_dir)
        assert len(df) == 12 and set(report.HISTORY_COLUMNS) <= set(df.columns)
        assert set(df.class_name) == {"negative", "positive"}
        path = report.health_figure_path(tmp_path / "figures", "tweets", run_dir.name)
        report.plot_generation_health(df, path)
        assert path.read_bytes()[:8] == PNG
    assert report.generation_diagnostics(dirs[1]).f_Z.isna().all()  # end_only records no Z-step


def write_generation_records(runs, generator, seed, f_x, f_z, consistent, n=5, snr=None):
    run_dir = runs / "tweets" / "generated" / f"{generator}-seed{seed}"
    run_dir.mkdir(parents=True)
    classes = [{"class": name, "f_Z": [fz, fz + 0.02], "f_X_final": [fx, fx], "mean_log_perplexity": 5.0,
                "last_changed_fraction": [0.9, 1.0], "snr": snr} for name, fx, fz in zip(("negative", "positive"), f_x, f_z)]
    (run_dir / "generate_metrics.json").write_text(json.dumps({"classes": classes}))
    stats = {"raw": [40, 40], "kept": [n, n]}
    if consistent:  # none: filter.label_filter was off, the record has no such count
        stats.update(label_consistent=consistent, kept=[min(n, k) for k in consistent])
    (runs / "tweets" / "trainsets").mkdir(parents=True, exist_ok=True)
    (runs / "tweets" / "trainsets" / f"{generator}-n{n}-seed{seed}_filter.json").write_text(json.dumps(stats))


def test_generation_summary_reads_metrics_and_filter_counts(tmp_path):
    runs = tmp_path / "runs"
    write_generation_records(runs, "gradmm", 0, f_x=(0.1, 0.2), f_z=(0.05, 0.07), consistent=[17, 36])
    write_generation_records(runs, "gradmm", 1, f_x=(0.3, 0.2), f_z=(0.06, 0.07), consistent=[21, 34])
    write_generation_records(runs, "gradmm_no_matching", 0, f_x=(0.25, 0.3), f_z=(0.06, 0.08),
                             consistent=[19, 30])
    write_generation_records(runs, "gradmm_dp", 0, f_x=(1.0, 1.0), f_z=(1.0, 1.0), consistent=[18, 36], snr=1.9e-4)
    write_generation_records(runs, "gradmm_plus", 0, f_x=(0.5, 0.6), f_z=(0.4, 0.5), consistent=None)
    info = {"method": "llm_zero_shot_gen", "filter": {"raw": [40, 40], "label_consistent": [10, 38], "kept": [5, 5]}}
    (runs / "tweets" / "trainsets" / "llm_zero_shot_gen-n5-seed0.info.json").write_text(json.dumps(info))

    df = report.generation_summary(runs, ["tweets", "absent"])
    assert list(df.columns) == report.SUMMARY_COLUMNS and len(df) == 12  # 5 runs x 2 classes + the baseline's 2
    row = df[(df.generator == "gradmm") & (df.seed == 1) & (df["class"] == "negative")].iloc[0]
    assert row.f_X_end == pytest.approx(0.3) and row.f_Z == pytest.approx(0.07) and row.f_Z_max == pytest.approx(0.08)
    assert row.changed_at_end == pytest.approx(0.95) and row.label_consistent == 21 and row.n_batches == 2
    llm = df[df.generator == "llm_zero_shot_gen"]
    assert list(llm["class"]) == ["negative", "positive"] and list(llm.label_consistent) == [10, 38]
    assert llm.f_Z.isna().all()

    md = report.write_generation_summary(df, tmp_path / "t" / "g.csv", tmp_path / "t" / "g.md")
    lines = [line for line in md.splitlines() if line.startswith("| tweets")]
    assert [line.split(" | ")[1] for line in lines] == ["llm_zero_shot_gen", "gradmm", "gradmm_no_matching",
                                                        "gradmm_dp", "gradmm_plus"]
    assert df[df.generator == "gradmm_plus"].label_consistent.isna().all()
    assert "| tweets | gradmm_plus | 1 | 0.500–0.600 | 0.410–0.510 | 0.95 | 5.00 | – | – / – |" in md
    assert "| tweets | gradmm_dp | 1 | 1.000 | 1.010 | 0.95 | 5.00 | 1.9e-04 | 18 of 40 / 36 of 40 |" in md
    assert "| tweets | gradmm | 2 | 0.100–0.300 | 0.060–0.080 | 0.95 | 5.00 | – | 17–21 of 40 / 34–36 of 40 |" in md
    assert "| tweets | llm_zero_shot_gen | 1 | – | – | – | – | – | 10 of 40 / 38 of 40 |" in md
    assert len((tmp_path / "t" / "g.csv").read_text().splitlines()) == 13
    assert "No generation records." in report.generation_summary_markdown(report.generation_summary(runs, ["absent"]))


def test_generator_of():
    assert generator_of("gradmm") == "gradmm"
    assert generator_of("gradmm_no_filter") == "gradmm"
    assert generator_of("gradmm_dp_no_filter") == "gradmm_dp"
    assert generator_of("random_real") is None


# ------------------------------------------------------------------------------------------- tracking
def test_tracking_uri_is_explicit_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location(tmp_path) == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert tracking.tracking_uri(tmp_path) == "http://localhost:5000"


def test_flatten_and_hash():
    flat = tracking.flatten({"generate": {"rho": 0.1, "order": "x" * 600}, "finetune": {"learning_rates": [1e-5, 2e-5]},
                             "dp": {"enabled": False, "x": None}})
    assert flat["generate.rho"] == "0.1" and flat["finetune.learning_rates"] == "[1e-05, 2e-05]"
    assert flat["dp.enabled"] == "false" and flat["dp.x"] == "null"
    assert len(flat["generate.order"]) == tracking.MAX_PARAM_CHARS
    assert tracking.params_hash(flat) == tracking.params_hash(dict(reversed(flat.items())))


def test_relevant_params_apply_variant_and_result():
    params = {"data": {"dataset": "tweets"}, "model": {"name": "smollm2-135m"}, "generate": {"rho": 0.5},
              "dp": {"enabled": False}, "finetune": {"steps": 3}, "experiment": {"n_per_class": 5}}
    p = tracking.relevant_params(params, "gradmm_dp", dataset="rtpolarity", model="tiny-random", n_per_class=2)
    assert p["dp"]["enabled"] is True and p["generate"]["rho"] == 0.5 and p["data"]["dataset"] == "rtpolarity"
    assert p["model"]["name"] == "tiny-random" and p["experiment"]["n_per_class"] == 2 and p["finetune"]["steps"] == 3
    assert "lora" in p["finetune"]  # defaults filled in by the config dataclasses
    assert "generate" not in tracking.relevant_params(params, "random_real")


def test_run_name_encodes_knobs():
    result = {"dataset": "rtpolarity", "model": "smollm2-135m", "method": "gradmm", "n_per_class": 5, "seed": 0}
    assert tracking.run_name(result, "1a2b3c4d5e6f") == "rtpolarity-smollm2-135m-gradmm-n5-seed0-1a2b3c"


def test_git_commit_outside_a_repository(tmp_path):
    assert tracking.git_commit(tmp_path) == "unknown"


def test_mlflow_failure_warns_and_returns_none(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    result = {"dataset": "tweets", "model": "tiny-random", "method": "gradmm", "n_per_class": 5, "seed": 0,
              "accuracy": 0.7}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracking.log_result("01_classification", result, {}, project_root=tmp_path) is None
    assert any("MLflow logging" in str(w.message) for w in caught)


def test_compare_tables_identical_differing_and_not_rerun(tmp_path):
    """scripts/quick.sh's verdict: identical runs say so; a moved accuracy and a dataset not re-run are named."""
    header = "dataset,model,method,n_per_class,seed,accuracy,wall_seconds\n"
    committed = tmp_path / "committed.csv"
    committed.write_text(header + "tweets,m,gradmm,5,0,0.58,40\ntweets,m,random_real,5,0,0.74,50\n"
                         "rtpolarity,m,gradmm,5,0,0.55,41\n")
    same = tmp_path / "same.csv"
    same.write_text(header + "tweets,m,gradmm,5,0,0.58,39\ntweets,m,random_real,5,0,0.74,52\n"
                    "rtpolarity,m,gradmm,5,0,0.55,40\n")
    rows, text = report.compare_tables(committed, same)
    assert text.endswith("Identical: all 3 accuracies equal the committed ones.")  # wall seconds are not compared
    moved = tmp_path / "moved.csv"
    moved.write_text(header + "tweets,m,gradmm,5,0,0.63,39\ntweets,m,random_real,5,0,0.74,52\n")
    rows, text = report.compare_tables(committed, moved)
    assert "1 of 2 accuracies differ" in text and "largest |Δ| 5.0 points" in text
    assert "Not re-run: rtpolarity" in text
    assert rows.set_index("method").loc["gradmm", "delta"] == pytest.approx(5.0)
