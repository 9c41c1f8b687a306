import json
import math

import pandas as pd
import pytest
import torch

from gradmm.cli import main
from gradmm.core.data import write_task
from gradmm.experiments import gradient_agreement as ga
from gradmm.reporting import gradient_agreement as report


def _write_cell(folder, rows, accuracies, train_file="trainset-n20-g0.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / train_file).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for s, acc in enumerate(accuracies):
        (folder / f"result-n20-g0-s{s}.json").write_text(json.dumps(
            {"train_file": train_file, "test_accuracy": acc, "dev_accuracy": acc + 0.01, "finetuned": True}))


def _rows(examples):
    return [{"text": ex.text, "label": ex.label} for ex in examples]


def test_gram_is_the_flattened_dot_products_per_group():
    torch.manual_seed(0)
    vectors = [[torch.randn(3, 4), torch.randn(5)] for _ in range(3)]
    G = ga.gram(vectors, {"first": [0], "both": [0, 1]})
    flat = torch.stack([torch.cat([t.reshape(-1) for t in v]).double() for v in vectors])
    assert torch.allclose(G["both"], flat @ flat.T, atol=1e-5)
    first = torch.stack([v[0].reshape(-1).double() for v in vectors])
    assert torch.allclose(G["first"], first @ first.T, atol=1e-5)


def test_distances_per_class_and_whole_set():
    torch.manual_seed(1)
    s0, s1, r0, r1 = torch.randn(4, 6).double()
    G = torch.stack([s0, s1, r0, r1]) @ torch.stack([s0, s1, r0, r1]).T
    per_class, whole = ga.distances(G, [0.25, 0.75], [0.5, 0.5])
    cos = torch.nn.functional.cosine_similarity
    assert per_class == pytest.approx(1 - (cos(s0, r0, 0) + cos(s1, r1, 0)).item() / 2)
    assert whole == pytest.approx(1 - cos(0.25 * s0 + 0.75 * s1, 0.5 * r0 + 0.5 * r1, 0).item())
    same = torch.stack([r0, r1, r0, r1]) @ torch.stack([r0, r1, r0, r1]).T
    assert ga.distances(same, [0.5, 0.5], [0.5, 0.5]) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_collect_sets_averages_runs_and_counts_a_shared_set_once(tmp_path, toy_task):
    rows = _rows(toy_task.pool[:6])
    _write_cell(tmp_path / "a" / "toy" / "random_real", rows, [0.6, 0.8])
    _write_cell(tmp_path / "b" / "toy" / "random_real", rows, [0.6, 0.8])  # the same texts in another study
    _write_cell(tmp_path / "b" / "toy" / "other", _rows(toy_task.pool[6:12]), [])  # never fine-tuned
    sets = ga.collect_sets([tmp_path / "a", tmp_path / "b"], "toy")
    assert [(s.study, s.method, s.runs) for s in sets] == [("a", "random_real", 2)]
    assert sets[0].test_accuracy == pytest.approx(0.7) and sets[0].dev_accuracy == pytest.approx(0.71)


def test_a_set_equal_to_the_dev_split_has_zero_distance_and_others_do_not(tiny, toy_task, tmp_path):
    model, tok = tiny
    dev_set = ga.TrainingSet("s", "toy", "dev_copy", "dev.jsonl", list(toy_task.dev), 0.9, 0.9, 1)
    other = ga.TrainingSet("s", "toy", "pool", "pool.jsonl", list(toy_task.pool), 0.6, 0.6, 1)
    partial = tmp_path / "rows.partial.jsonl"
    rows = ga.measure_sets(model, tok, toy_task, [dev_set, other], progress=False, partial=partial)
    measures = [c for c in rows[0] if c.endswith(("_class", "_whole"))]
    assert len(measures) == 1 + len(ga.LOSSES) * len(ga.GROUPS) * 2
    assert all(abs(rows[0][m]) < 1e-5 for m in measures), {m: rows[0][m] for m in measures}
    assert all(rows[1][m] > 1e-4 for m in measures), {m: rows[1][m] for m in measures}
    assert not any(p.requires_grad for p in model.parameters())  # the shared fixture model is left frozen
    # a resumed run keeps the rows already measured (here one edited by hand, to tell it from a re-measure)
    done = [json.loads(line) for line in partial.read_text().splitlines()]
    done[1]["paper_all_whole"] = 123.0
    partial.write_text("".join(json.dumps(r) + "\n" for r in done))
    again = ga.measure_sets(model, tok, toy_task, [dev_set, other], progress=False, partial=partial)
    assert again[1]["paper_all_whole"] == 123.0 and again[0] == rows[0]


def test_correlations_rank_the_sets():
    sets = pd.DataFrame({"dataset": ["d"] * 5, "test_accuracy": [0.5, 0.6, 0.7, 0.8, 0.9],
                         "dev_accuracy": [0.9, 0.8, 0.7, 0.6, 0.5], "texts": [10, 20, 30, 40, 50],
                         "head_paper_class": [0.5, 0.4, 0.3, 0.2, 0.1]})
    corr = report.correlations(sets).set_index("measure")
    assert corr.loc["head_paper_class", "rho_test"] == pytest.approx(-1.0)
    assert corr.loc["head_paper_class", "rho_dev"] == pytest.approx(1.0)
    assert corr.loc["texts", "rho_test"] == pytest.approx(1.0) and corr.loc["texts", "sets"] == 5
    assert "| set size (texts after the filter) | +1.00" in report.markdown(report.correlations(sets))


def test_cli_measures_a_study_and_reports(toy_task, tmp_path, capsys):
    task_dir = tmp_path / "task"
    write_task(toy_task, task_dir)
    for method, part, accs in (("a", toy_task.pool[:8], [0.7, 0.9]), ("b", toy_task.pool[8:16], [0.5]),
                               ("c", toy_task.pool[4:14], [0.6])):
        _write_cell(tmp_path / "study" / "toy" / method, _rows(part), accs)
    (tmp_path / "empty.yaml").write_text("")
    out = tmp_path / "tables" / "toy.csv"
    args = ["gradient-agreement", "--params", str(tmp_path / "empty.yaml"), "--set", "model.name=tiny-random",
            "--set", "model.device=cpu", "--task", str(task_dir), "--studies", str(tmp_path / "study"), "--out", str(out)]
    assert main(args) == 0
    sets = pd.read_csv(out)
    assert list(sets.method) == ["a", "b", "c"] and sets.test_accuracy.tolist() == pytest.approx([0.8, 0.5, 0.6])
    assert not out.with_suffix(".partial.jsonl").exists()
    assert main(["gradient-agreement-report", str(out), "--out", str(tmp_path / "corr.csv"), "--markdown",
                 str(tmp_path / "corr.md"), "--figure", str(tmp_path / "corr.png")]) == 0
    assert (tmp_path / "corr.png").stat().st_size > 0
    assert set(pd.read_csv(tmp_path / "corr.csv").measure) == {m for m in report.MEASURES if m in sets.columns}


def test_cli_names_a_missing_study_before_loading_anything(toy_task, tmp_path, capsys):
    write_task(toy_task, tmp_path / "task")
    (tmp_path / "empty.yaml").write_text("")
    assert main(["gradient-agreement", "--params", str(tmp_path / "empty.yaml"), "--task", str(tmp_path / "task"),
                 "--studies", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "study folder" in err and "nope" in err
    assert main(["gradient-agreement-report", str(tmp_path / "missing.csv"), "--out", "a.csv", "--markdown", "a.md",
                 "--figure", "a.png"]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_partial_rank_correlation_removes_what_set_size_explains():
    size = pd.Series([10, 20, 30, 40, 50, 60])
    # distance and accuracy both follow set size only: a perfect ρ, and nothing left at a fixed size
    distance = pd.Series([6, 5, 4, 3, 2, 1])
    accuracy = pd.Series([0.5, 0.6, 0.7, 0.75, 0.8, 0.9])
    assert report.correlations(pd.DataFrame({"dataset": "d", "texts": size, "head_paper_class": distance,
                                             "test_accuracy": accuracy, "dev_accuracy": accuracy}))[
        "rho_test"].iloc[1] == pytest.approx(-1.0)
    assert math.isnan(report.partial_rank_correlation(distance, accuracy, size))
    # within size, the distance ranks accuracy: it survives
    noise = pd.Series([0.0, 1, 0, 1, 0, 1])
    assert report.partial_rank_correlation(-noise, pd.Series([1.0, 2, 3, 4, 5, 6]) + 3 * noise, size) < -0.5
