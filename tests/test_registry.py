"""A method is one registry record: what the code asks about a name comes from there, and adding a baseline is
one builder function plus one record."""

from gradmm.config import ExperimentConfig
from gradmm.methods import registry
from gradmm.methods.baselines import SetRequest
from gradmm.methods.trainsets import make_trainset


def test_every_name_has_one_record_with_its_properties():
    assert registry.get("zero_shot").finetuned is False and registry.get("few_shot").finetuned is False
    assert registry.get("random_real").per_seed_set and not registry.get("full_real").per_seed_set
    assert registry.get("gradmm_dp").private and not registry.get("gradmm").private
    assert registry.get("gradmm_no_filter").variant == "gradmm" and not registry.get("gradmm_no_filter").filtered
    assert registry.names("lm_text") == ["llm_zero_shot_gen", "llm_few_shot_gen", "gradmm_select_full",
                                         "gradmm_select_full_few_shot", "gradmm_select_path", "gradmm_select_class",
                                         "gradmm_select_class_few_shot"]
    assert "few_shot" not in registry.names(in_studies=True) and "gradmm_plus" in registry.names(in_studies=True)
    assert set(registry.all_methods()) == set(registry.BASELINES) | set(registry.GENERATORS) | {
        f"{g}_no_filter" for g in registry.GENERATORS}


def longest_real(req: SetRequest) -> tuple[list[dict], dict]:
    """A new baseline: the n longest pool texts of each class."""
    rows = []
    for c in range(req.task.n_classes):
        texts = sorted((ex.text for ex in req.task.pool if ex.label == c), key=len, reverse=True)[:req.n]
        rows += [{"text": t, "label": c} for t in texts]
    return rows, {"rule": "longest"}


def test_adding_a_baseline_is_one_function_and_one_record(monkeypatch, toy_task):
    monkeypatch.setitem(registry.METHODS, "longest_real", registry.Method("longest_real", "real", longest_real))
    registry.check_method("longest_real")  # the stages accept the name
    rows, info = make_trainset("longest_real", None, None, toy_task, ExperimentConfig(n_per_class=2), seed=3)
    assert info == {"method": "longest_real", "seed": 3, "rule": "longest"}
    assert [r["label"] for r in rows] == [0, 0, 1, 1]
    for c in (0, 1):
        longest = max(len(ex.text) for ex in toy_task.pool if ex.label == c)
        assert max(len(r["text"]) for r in rows if r["label"] == c) == longest
    assert registry.get("longest_real").finetuned and "longest_real" in registry.names("real")
