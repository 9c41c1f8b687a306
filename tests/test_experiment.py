import pytest

from gradmm.config import ExperimentConfig, FinetuneConfig
from gradmm.core.data import task_from_dir, write_task
from gradmm.experiments.classification import result_file
from gradmm.methods.registry import all_methods, check_method, variant_overrides
from gradmm.methods.trainsets import at_budget, budgets, check_experiment, evaluate_method, make_trainset

FT = FinetuneConfig(learning_rates=[1e-3], steps=2, batch_size=4)


def test_method_names():
    methods = all_methods()
    assert {"gradmm", "gradmm_dp", "gradmm_no_filter", "random_real", "full_real", "zero_shot"} <= set(methods)
    with pytest.raises(ValueError, match="unknown method 'gradmm_magic'"):
        check_method("gradmm_magic")
    with pytest.raises(ValueError, match="generators"):
        check_experiment(ExperimentConfig(generators=["nope"]))
    assert variant_overrides("gradmm_dp") == ["dp.enabled=true"]


def test_budgets_a_grid_and_one_per_stage_call(toy_task):
    grid = ExperimentConfig(n_per_class=[2, 5])
    assert budgets(grid) == [2, 5] and budgets(ExperimentConfig(n_per_class=3)) == [3]
    assert at_budget(grid, 5).n_per_class == 5 and at_budget(ExperimentConfig(n_per_class=[4])).n_per_class == 4
    with pytest.raises(ValueError, match=r"several budgets \[2, 5\]: pick one with --n-per-class"):
        at_budget(grid)
    with pytest.raises(ValueError, match=r"must list budgets ≥ 1, got \[2, 0\]"):
        check_experiment(ExperimentConfig(n_per_class=[2, 0]))
    with pytest.raises(ValueError, match="several budgets"):  # a baseline needs one n
        make_trainset("random_real", None, None, toy_task, grid, seed=0)
    assert len(make_trainset("random_real", None, None, toy_task, at_budget(grid, 2), seed=0)[0]) == 4
    assert result_file("runs", "tweets", "gradmm", 5, 1).as_posix() == "runs/tweets/results/gradmm-n5-seed1.json"


@pytest.mark.parametrize("method, size", [("zero_shot", 0), ("few_shot", 4), ("random_real", 4), ("full_real", 20)])
def test_real_data_baselines_respect_the_budget(tiny, toy_task, method, size):
    model, tok = tiny
    rows, _ = make_trainset(method, model, tok, toy_task, ExperimentConfig(n_per_class=2), seed=0)
    assert len(rows) == size
    pool = {(ex.text, ex.label) for ex in toy_task.pool}
    assert all((r["text"], r["label"]) in pool for r in rows)  # real baselines only ever use the pool
    if size == 4:
        assert sorted(r["label"] for r in rows) == [0, 0, 1, 1]


def test_coreset_on_lm_features(tiny, toy_task):
    model, tok = tiny
    rows, _ = make_trainset("kcenter", model, tok, toy_task, ExperimentConfig(n_per_class=2, coreset_features="lm"), 0)
    assert sorted(r["label"] for r in rows) == [0, 0, 1, 1]


def test_evaluate_methods(tiny, toy_task):
    model, tok = tiny
    rows = [{"text": ex.text, "label": ex.label} for ex in toy_task.pool[:6]]
    icl = evaluate_method("few_shot", rows, model, tok, toy_task, FT, seed=0, progress=False)
    assert icl["finetuned"] is False and 0 <= icl["test_accuracy"] <= 1
    ft = evaluate_method("random_real", rows, model, tok, toy_task, FT, seed=0, progress=False)
    assert ft["finetuned"] is True and ft["n_train"] == 6 and "best_lr" in ft
    empty = evaluate_method("gradmm", [], model, tok, toy_task, FT, seed=0, progress=False)
    assert empty["finetuned"] is False and empty["n_train"] == 0
    assert empty["empty_trainset"] is True and empty["test_accuracy"] is None  # not the base model's accuracy


def test_prepared_task_round_trip(toy_task, tmp_path):
    write_task(toy_task, tmp_path)
    back = task_from_dir(tmp_path)
    assert back == toy_task
    with pytest.raises(FileNotFoundError, match="gradmm prepare"):
        task_from_dir(tmp_path / "missing")
