"""`gradmm mlflow-import` and the report run: committed results into a tmp_path MLflow store, each with its training
set, once; the report files in one run, not in each."""

import json

import pytest

from gradmm.cli import main
from gradmm.reporting import classification as report
from gradmm.reporting import tracking

SETS = {"few_shot-n2-seed0": [{"text": "a fine film", "label": 1}, {"text": "dull", "label": 0}],
        "random_real-n2-seed0": [{"text": "loved it", "label": 1}, {"text": "boring", "label": 0}]}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A copied-out profile, as studies/full-profile/runs: results record `runs/...`, which is not there.
    Two results with their sets under trainsets/, one (herding) whose set is missing."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "study" / "runs"
    (runs / "tweets" / "results").mkdir(parents=True)
    (runs / "tweets" / "trainsets").mkdir()
    for i, name in enumerate([*SETS, "herding-n2-seed0"]):
        method = name.split("-")[0]
        (runs / "tweets" / "results" / f"{name}.json").write_text(json.dumps(
            {"test_accuracy": 0.6 + i / 10, "test_prediction_shares": [0.5, 0.5], "n_train": 4, "method": method,
             "seed": 0, "wall_seconds": 1.0, "dataset": "tweets", "model": "tiny-random", "n_per_class": 2,
             "train_file": f"runs/tweets/trainsets/{name}.jsonl"}))
        if name in SETS:
            (runs / "tweets" / "trainsets" / f"{name}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in SETS[name]))
    project = tmp_path / "project"
    project.mkdir()
    return runs, project


def _runs(project, experiment="01_classification"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri(project))
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_import_twice_gives_one_run_per_result_with_its_training_set(results, tmp_path):
    runs, project = results
    first = tracking.import_results(runs, project_root=project)
    again = tracking.import_results(runs, project_root=project)
    assert (first["added"], first["skipped"], first["trainsets_missing"], first["report"]) == (3, 0, 1, True)
    assert (again["added"], again["skipped"], again["report"]) == (0, 3, False)

    client, logged = _runs(project)
    result_runs = [r for r in logged if r.data.tags.get(tracking.REPORT_KIND_TAG) != "report"]
    assert len(logged) == 4 and len(result_runs) == 3  # plus one report run
    assert len({r.data.tags[tracking.RESULT_KEY_TAG] for r in result_runs}) == 3
    by_method = {r.data.tags["method"]: r for r in result_runs}
    for name, rows in SETS.items():
        run = by_method[name.split("-")[0]]
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["trainset"]
        local = client.download_artifacts(run.info.run_id, f"trainset/{name}.jsonl", str(tmp_path / name))
        assert [json.loads(line) for line in open(local)] == rows
        assert tracking.TRAINSET_MISSING_TAG not in run.data.tags
        assert run.data.metrics["accuracy"] == pytest.approx(0.6 + list(SETS).index(name) / 10)
    missing = by_method["herding"]
    assert "runs/tweets/trainsets/herding-n2-seed0.jsonl" in missing.data.tags[tracking.TRAINSET_MISSING_TAG]
    assert client.list_artifacts(missing.info.run_id) == []


def test_report_files_go_into_one_report_run_not_into_each_run(results, tmp_path):
    runs, project = results
    files = [tmp_path / "classification.csv", tmp_path / "classification.md"]
    for f in files:
        f.write_text("a report file\n")
    df = report.collect_results(runs)
    ids = tracking.log_results(df, "01_classification", {}, project_root=project, runs_dir=runs, figures=files,
                               tags={"profile": "quick"})
    assert len(ids) == 3

    client, logged = _runs(project)
    reports = [r for r in logged if r.data.tags.get(tracking.REPORT_KIND_TAG) == "report"]
    assert len(logged) == 4 and len(reports) == 1
    assert reports[0].info.run_name == "report-quick"
    assert sorted(a.path for a in client.list_artifacts(reports[0].info.run_id, "report")) == [
        "report/classification.csv", "report/classification.md"]
    for run_id in ids:  # each result run: its training set (found beside the result), no copy of the report
        assert [a.path for a in client.list_artifacts(run_id)] in (["trainset"], [])
    assert sum(bool(client.list_artifacts(i)) for i in ids) == 2


def test_cli_summary_and_bad_folder(results, capsys):
    runs, project = results
    assert main(["mlflow-import", str(runs), "--project-root", str(project)]) == 0
    out = capsys.readouterr().out
    assert "3 runs added, 0 skipped as existing, 1 training sets missing" in out and "make ui" in out
    assert main(["mlflow-import", str(runs), "--project-root", str(project)]) == 0
    assert "0 runs added, 3 skipped as existing" in capsys.readouterr().out

    assert main(["mlflow-import", str(project / "nowhere"), "--project-root", str(project)]) == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "Traceback" not in err


def test_fine_tuning_loss_curves_and_real_duration(results):
    """A result with `lr_runs` gives per-step train_loss (the dev-picked LR), one curve per LR of the grid, and a
    run that spans the result's wall seconds."""
    runs, project = results
    path = runs / "tweets" / "results" / "random_real-n2-seed0.json"
    result = json.loads(path.read_text())
    result.update(best_lr=1e-4, wall_seconds=12.0, lr_runs=[
        {"lr": 5e-5, "dev_accuracy": 0.5, "seconds": 4.0, "train_losses": [0.9, 0.8, 0.85]},
        {"lr": 1e-4, "dev_accuracy": 0.7, "seconds": 6.0, "train_losses": [0.9, 0.6, 0.4]}])
    path.write_text(json.dumps(result))
    tracking.import_results(runs, project_root=project)
    client, logged = _runs(project)
    run = next(r for r in logged if r.data.tags.get("method") == "random_real")
    history = {name: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, name),
                                                        key=lambda m: m.step)]
               for name in ("train_loss", "train_loss/lr_5e-05", "train_loss/lr_0.0001", "dev_accuracy/lr_5e-05")}
    assert history["train_loss"] == [(0, 0.9), (1, 0.6), (2, 0.4)]  # the LR picked on dev
    assert history["train_loss/lr_5e-05"] == [(0, 0.9), (1, 0.8), (2, 0.85)]
    assert history["train_loss/lr_0.0001"] == history["train_loss"]
    assert history["dev_accuracy/lr_5e-05"] == [(3, 0.5)]
    assert run.info.end_time - run.info.start_time == 12_000
