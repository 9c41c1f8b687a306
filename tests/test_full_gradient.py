"""Choosing a training set by the fine-tuning gradient over every weight (filter rank set_gradient)."""

from dataclasses import replace

import pytest
import torch

from gradmm.config import ExperimentConfig, FilterConfig
from gradmm.methods import filtering
from gradmm.methods.finetune import train_copy
from gradmm.methods.full_gradient import (
    GradientSketch,
    choose_from_gram,
    choose_matching_set,
    class_gram_terms,
    class_norm_ratios,
    example_sketches,
    fine_tuning_gradient,
    gram_terms,
    path_gram_terms,
    set_distance,
)
from gradmm.methods.trainsets import make_trainset


def test_sketch_is_linear_and_keeps_inner_products(tiny):
    model, _ = tiny
    sketch = GradientSketch(model, k=2 ** 16, seed=0)
    gen = torch.Generator().manual_seed(1)
    a = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    b = [x + 0.5 * torch.randn(x.shape, generator=gen) for x in a]  # correlated with a
    Sa, Sb = sketch(a), sketch(b)
    assert torch.allclose(sketch([x + y for x, y in zip(a, b)]), Sa + Sb, atol=1e-3)
    exact = sum(float((x * y).sum()) for x, y in zip(a, b))
    norms = (sum(float((x * x).sum()) for x in a) * sum(float((y * y).sum()) for y in b)) ** 0.5
    assert abs(float(Sa @ Sb) - exact) / norms < 0.05  # error ~ 1/sqrt(k) relative to the norms
    assert torch.equal(GradientSketch(model, k=2 ** 16, seed=0)(a), Sa)  # the same signs from the same seed


def test_choice_finds_the_rows_that_make_the_reference():
    gen = torch.Generator().manual_seed(0)
    G = torch.randn(12, 50, generator=gen)
    labels = [0] * 6 + [1] * 6
    target_rows = [1, 4, 7, 11]  # two per class
    reference = G[target_rows].mean(0)
    kept, info = choose_matching_set(G, labels, reference, n_per_class=2)
    assert sorted(kept) == target_rows and info["distance"] == pytest.approx(0.0, abs=1e-9)
    assert info["distance"] <= info["start_distance"]
    K, b = G.double() @ G.double().T, G.double() @ reference.double()
    assert set_distance(K, b, float(reference.double() @ reference.double()), kept) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="class 0 has 6 candidate texts, fewer than n_per_class=7"):
        choose_matching_set(G, labels, reference, n_per_class=7)


def test_filter_keeps_the_best_matching_balanced_set(tiny, toy_task):
    model, tok = tiny
    rows = [{"text": ex.text, "label": ex.label, "match_loss": 0.0, "log_perplexity": 0.0} for ex in toy_task.test]
    cfg = FilterConfig(n_per_class=3, label_filter=False, rank="set_gradient")
    kept, stats = filtering.filter_rows(model, tok, toy_task, rows, cfg, progress=False)
    assert stats["kept"] == [3, 3] and all(r in rows for r in kept)
    info = stats["set_gradient"]
    assert info["distance"] <= info["start_distance"]
    # the reported distance is the kept set's own, recomputed from exact (unsketched) gradients within sketch error
    from gradmm.core.data import Example

    exact_set = fine_tuning_gradient(model, tok, [Example(r["text"], r["label"]) for r in kept], toy_task.template)
    exact_pool = fine_tuning_gradient(model, tok, toy_task.pool, toy_task.template)
    dot = sum(float((a * b).sum()) for a, b in zip(exact_set, exact_pool))
    norm = (sum(float((a * a).sum()) for a in exact_set) * sum(float((b * b).sum()) for b in exact_pool)) ** 0.5
    assert 1 - dot / norm == pytest.approx(info["distance"], abs=0.05)
    assert not any(p.requires_grad for p in model.parameters())  # the shared model is left frozen


def test_set_gradient_is_refused_where_it_cannot_apply(tiny, toy_task):
    model, tok = tiny
    rows = [{"text": ex.text, "label": ex.label, "match_loss": 0.0, "log_perplexity": 0.0} for ex in toy_task.test]
    with pytest.raises(ValueError, match="private pool's gradient"):
        filtering.filter_rows(model, tok, toy_task, rows, FilterConfig(n_per_class=2, rank="set_gradient"),
                              private=True, progress=False)
    with pytest.raises(ValueError, match="filter.balance=true"):
        filtering.check_config(FilterConfig(rank="set_gradient", balance=False))
    with pytest.raises(ValueError, match="filter.rank 'best'"):
        filtering.check_config(FilterConfig(rank="best"))


def test_example_sketches_are_per_text(tiny, toy_task):
    model, tok = tiny
    sketch = GradientSketch(model, k=4096)
    S = example_sketches(model, tok, toy_task.pool[:3], toy_task.template, sketch, progress=False)
    assert S.shape == (3, 4096)
    assert torch.equal(S[1], sketch(fine_tuning_gradient(model, tok, [toy_task.pool[1]], toy_task.template)))


def small_set(model, tok, task, method: str, **filter_kw) -> tuple[list[dict], dict]:
    """`method`'s training set of 2 texts per class from 4 LM draws per class, no label check."""
    exp = ExperimentConfig(llm_raw_per_class=4, n_per_class=2)
    filt = FilterConfig(n_per_class=2, label_filter=False, **filter_kw)
    return make_trainset(method, model, tok, task, exp, seed=0, filter_cfg=filt, progress=False)


def test_gradmm_select_full_keeps_the_llm_draws_and_chooses_among_them(tiny, toy_task):
    model, tok = tiny
    chosen, info = small_set(model, tok, toy_task, "gradmm_select_full")
    plain, plain_info = small_set(model, tok, toy_task, "llm_zero_shot_gen")
    assert [r["text"] for r in info["raw"]] == [r["text"] for r in plain_info["raw"]]  # the same LM draws
    raw = {r["text"] for r in info["raw"]}
    assert len(chosen) == 4 and {r["text"] for r in chosen} <= raw and "set_gradient" in info["filter"]


def test_path_terms_are_the_checkpoints_joined_each_scaled_to_the_same_weight():
    gen = torch.Generator().manual_seed(2)
    G1, G2 = torch.randn(10, 30, generator=gen), 0.01 * torch.randn(10, 30, generator=gen)  # later: smaller
    r1, r2 = G1[[0, 6]].mean(0) + 0.1 * torch.randn(30, generator=gen), G2[[2, 8]].mean(0)
    labels = [0] * 5 + [1] * 5
    joined = torch.cat([G1 / r1.norm(), G2 / r2.norm()], 1)
    reference = torch.cat([r1 / r1.norm(), r2 / r2.norm()])
    expected = choose_matching_set(joined, labels, reference, n_per_class=2)
    got = choose_from_gram(*path_gram_terms([gram_terms(G1, r1), gram_terms(G2, r2)]), labels, n_per_class=2)
    assert sorted(got[0]) == sorted(expected[0]) and got[1]["distance"] == pytest.approx(expected[1]["distance"])
    # unscaled, the second checkpoint's small gradients would not count: the choice is the first one's alone
    first_only = choose_matching_set(G1, labels, r1, n_per_class=2)
    assert sorted(first_only[0]) != sorted(got[0])


def test_stop_after_gives_the_runs_first_steps(tiny, toy_task):
    model, tok = tiny
    cfg = filtering.PATH_RECIPE
    full, losses = train_copy(model, tok, toy_task.pool, toy_task.template, cfg, 5e-5, 0, progress=False)
    part, part_losses = train_copy(model, tok, toy_task.pool, toy_task.template, cfg, 5e-5, 0, progress=False,
                                   stop_after=3)
    assert len(losses) == cfg.steps and part_losses == losses[:3]
    moved = [not torch.equal(a, b) for a, b in zip(part.parameters(), model.parameters())]
    assert any(moved) and any(not torch.equal(a, b) for a, b in zip(part.parameters(), full.parameters()))


def test_set_gradient_path_matches_at_the_pools_checkpoints(tiny, toy_task):
    model, tok = tiny
    rows = [{"text": ex.text, "label": ex.label, "match_loss": 0.0, "log_perplexity": 0.0} for ex in toy_task.test]
    base = FilterConfig(n_per_class=3, label_filter=False)
    one, one_stats = filtering.filter_rows(model, tok, toy_task, rows, replace(base, rank="set_gradient"),
                                           progress=False)
    at_start, start_stats = filtering.filter_rows(
        model, tok, toy_task, rows, replace(base, rank="set_gradient_path", path_steps=[0]), progress=False)
    assert at_start == one and start_stats["set_gradient"] == one_stats["set_gradient"]  # step 0 alone: the same
    kept, stats = filtering.filter_rows(model, tok, toy_task, rows,
                                        replace(base, rank="set_gradient_path", path_steps=[0, 10]), progress=False)
    info = stats["set_gradient"]
    assert stats["kept"] == [3, 3] and info["path_steps"] == [0, 10] and info["distance"] <= info["start_distance"]
    assert info["start_distance"] != one_stats["set_gradient"]["start_distance"]  # the checkpoint at 10 counts
    assert not any(p.requires_grad for p in model.parameters())
    for bad, match in ((dict(path_steps=[25]), r"filter.path_steps \[25\]"), (dict(path_steps=[]), "path_steps"),
                       (dict(path_steps=[5, 5]), "distinct"), (dict(path_lr=0.0), "path_lr must be > 0")):
        with pytest.raises(ValueError, match=match):
            filtering.check_config(replace(base, rank="set_gradient_path", **bad))


def test_gradmm_select_path_chooses_among_the_same_draws_along_the_pools_fine_tuning(tiny, toy_task):
    model, tok = tiny
    chosen, info = small_set(model, tok, toy_task, "gradmm_select_path", path_steps=[0, 3])
    _, full_info = small_set(model, tok, toy_task, "gradmm_select_full", path_steps=[0, 3])
    assert [r["text"] for r in info["raw"]] == [r["text"] for r in full_info["raw"]]  # the same LM draws
    assert len(chosen) == 4 and info["filter"]["set_gradient"]["path_steps"] == [0, 3]
    assert "path_steps" not in full_info["filter"]["set_gradient"]


def test_class_choice_matches_each_class_where_the_whole_set_lets_one_lean():
    # the pool's classes push along e0 (class 0) and e1 (class 1), equally hard. Class 0's candidates: two along e0,
    # two along 0.2·e0 (weak). Class 1's: two along e1 (with a little e2), two along e1 + 0.8·e0, which also push
    # class 0's way. The whole set's sum can point exactly along e0 + e1 with weak class-0 texts and class-1 texts
    # doing class 0's work: a lean to class 1. Per class, each class must push its own way, as hard as the other.
    e0, e1, e2 = torch.eye(3, dtype=torch.float64)
    G = torch.stack([e0, e0 + 0.01 * e2, 0.2 * e0, 0.2 * e0 + 0.002 * e2,
                     e1 + 0.3 * e2, e1 + 0.31 * e2, e1 + 0.8 * e0, e1 + 0.8 * e0 + 0.01 * e2])
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    refs = [e0, e1]
    K, b, ref_sq = class_gram_terms(G, labels, refs)
    assert float(K[0, 6]) == 0.0 and float(K[0, 1]) == 1.0  # block-diagonal: classes never meet
    assert ref_sq == 2.0 and float(b[6]) == 1.0 and float(b[2]) == pytest.approx(0.2)  # each text against its class
    kept, info = choose_from_gram(K, b, ref_sq, labels, 2)
    assert sorted(kept) == [0, 1, 4, 5] and info["distance"] <= info["start_distance"]
    assert class_norm_ratios(K, labels, kept, refs) == pytest.approx([1.0, 1.05], abs=0.01)
    whole, whole_info = choose_matching_set(G, labels, (e0 + e1) / 2, n_per_class=2)
    lean = class_norm_ratios(K, labels, sorted(whole), refs)
    assert sorted(whole) == [2, 3, 6, 7] and whole_info["distance"] < 1e-4  # closer as a whole ...
    assert lean[1] > 3 * lean[0]  # ... by leaning to class 1


def test_set_gradient_class_chooses_per_class_among_the_same_draws(tiny, toy_task):
    model, tok = tiny
    chosen, info = small_set(model, tok, toy_task, "gradmm_select_class")
    _, full_info = small_set(model, tok, toy_task, "gradmm_select_full")
    assert [r["text"] for r in info["raw"]] == [r["text"] for r in full_info["raw"]]  # the same LM draws
    stats = info["filter"]["set_gradient"]
    assert info["filter"]["kept"] == [2, 2] and len(chosen) == 4 and stats["distance"] <= stats["start_distance"]
    assert len(stats["class_norm_ratio"]) == 2 and all(r > 0 for r in stats["class_norm_ratio"])
    assert stats["start_distance"] != full_info["filter"]["set_gradient"]["start_distance"]  # another reference
    assert not any(p.requires_grad for p in model.parameters())
    assert small_set(model, tok, toy_task, "gradmm_select_class")[0] == chosen  # deterministic
