"""Exact token swaps on the tiny model: each applied swap lowers f(Z), from the faithful projection of the same X
and from the LM's own text, and every swapped token is one of the LM's top next tokens at its position."""

import pytest
import torch

from gradmm.config import DPConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, check_config, run_batch
from gradmm.core.matching import class_targets
from gradmm.core.models import load_model
from gradmm.core.projection import allowed_token_mask
from gradmm.core.swaps import next_token_candidates, refine_by_swaps
from gradmm.io.records import read_jsonl
from gradmm.methods.generate import generate
from gradmm.methods.registry import GENERATORS

TINY = ModelConfig(name="tiny-random", device="cpu")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("tiny-random", device="cpu")


def _problem(tiny, toy_task, **kw):
    model, tok = tiny
    target = class_targets(model, tok, toy_task.pool, toy_task.template)[1]
    layout = Layout(tok("Text:", add_special_tokens=False).input_ids, tok(" It was", add_special_tokens=False).input_ids, 10)
    cfg = GenerateConfig(**{"topk": 20, "init_candidates": 1, "outer_steps": 1, "inner_steps": 1, **kw})
    return Problem(model, target, layout, tok("Write:", add_special_tokens=False).input_ids, allowed_token_mask(tok), cfg)


def test_swaps_lower_f_of_the_faithful_projection_of_the_same_x(tiny, toy_task):
    problem = _problem(tiny, toy_task)
    X = problem.freeze(torch.randn(3, 10, problem.emb.shape[1], generator=torch.Generator().manual_seed(1)) * 3)
    Z0, _ = problem.project(X, progress=False)
    f0 = problem.f_ids(Z0).item()
    Z1, steps = refine_by_swaps(problem, Z0, steps=6, next_topk=15, n_candidates=24)
    f1 = problem.f_ids(Z1).item()
    assert f1 < f0 - 1e-4, (f0, f1)
    applied = [s for s in steps if s["f_after"] < s["f_before"]]
    assert applied and all(a["f_after"] < a["f_before"] for a in applied)
    assert abs(steps[0]["f_before"] - f0) < 1e-5 and abs(applied[-1]["f_after"] - f1) < 1e-5  # evaluated, not predicted
    free = problem.layout.free
    assert torch.equal(Z1[:, :free.start], Z0[:, :free.start]) and torch.equal(Z1[:, free.stop:], Z0[:, free.stop:])
    changed = (Z1 != Z0).nonzero().tolist()
    assert 0 < len(changed) <= len(applied)  # one token per applied swap (a later swap may undo an earlier)


def test_a_swapped_token_is_among_the_lms_top_next_tokens(tiny, toy_task):
    problem = _problem(tiny, toy_task)
    Z0 = problem.sample_ids(2, seed=3)
    Z1, steps = refine_by_swaps(problem, Z0, steps=1, next_topk=5, n_candidates=10)
    assert steps[0]["f_after"] <= steps[0]["f_before"]
    cand = next_token_candidates(problem.model, Z0, problem.decoding_prefix, problem.layout.free, problem.allowed, 5)
    for b, j in (Z1 != Z0).nonzero().tolist():
        assert Z1[b, j].item() in cand[b, j - problem.layout.free.start].tolist()


def test_lm_text_refined_without_admm(tiny, toy_task):
    problem = _problem(tiny, toy_task, init="lm", outer_steps=0, swap_steps=3, swap_candidates=16, swap_next_topk=10)
    check_config(problem.cfg)
    out = run_batch(problem, 2, seed=0, progress=False)
    assert out["history"] == [] and len(out["swaps"]) >= 1
    assert out["f_Z"] <= out["f_Z_before_swaps"]
    assert abs(out["f_Z"] - problem.f_ids(out["ids"]).item()) < 1e-5
    assert problem.allowed[out["ids"][:, problem.layout.free]].all()
    assert torch.allclose(out["logppl"], problem.log_ppl(out["ids"]).cpu())


def test_swap_settings_are_checked():
    with pytest.raises(ValueError, match="outer_steps"):
        check_config(GenerateConfig(outer_steps=0))  # no ADMM and nothing to refine
    with pytest.raises(ValueError, match="outer_steps"):
        check_config(GenerateConfig(outer_steps=0, swap_steps=5))  # random tokens are no start
    check_config(GenerateConfig(outer_steps=0, init="lm"))  # the LM's text as it is (gradmm_swap_start)
    with pytest.raises(ValueError, match="joint"):
        check_config(GenerateConfig(swap_steps=5, joint=True))
    check_config(GenerateConfig(outer_steps=0, swap_steps=5, init="lm"))


def test_the_swap_start_is_the_swap_variants_text_before_its_swaps(toy_data, tmp_path):
    """Same seeds: gradmm_swap_start's texts are the LM batches gradmm_swap starts its swaps from."""
    small = {"n_per_class": 2, "batch_size": 2, "max_seq_len": 10, "topk": 20, "init_candidates": 1}
    start = generate(toy_data, TINY, GenerateConfig(**{**GENERATORS["gradmm_swap_start"]["generate"], **small}),
                     DPConfig(), tmp_path / "start", progress=False)
    swap = generate(toy_data, TINY, GenerateConfig(**{**GENERATORS["gradmm_swap"]["generate"], **small,
                                                      "swap_steps": 2, "swap_candidates": 8, "swap_next_topk": 8}),
                    DPConfig(), tmp_path / "swap", progress=False)
    for a, b in zip(start["classes"], swap["classes"]):
        assert a["f_Z"] == pytest.approx(b["f_Z_before_swaps"], abs=1e-5)


def test_the_swap_variant_generates_through_the_pipeline(toy_data, tmp_path):
    gen = GenerateConfig(**{**GENERATORS["gradmm_swap"]["generate"], "n_per_class": 2, "batch_size": 2,
                            "max_seq_len": 10, "topk": 20, "init_candidates": 1, "swap_steps": 2,
                            "swap_candidates": 8, "swap_next_topk": 8})
    metrics = generate(toy_data, TINY, gen, DPConfig(), tmp_path, progress=False)
    rows = read_jsonl(tmp_path / "raw.jsonl")
    assert len(rows) == 4 and all(r["text"] for r in rows)
    for c in metrics["classes"]:
        assert all(a <= b + 1e-9 for a, b in zip(c["f_Z"], c["f_Z_before_swaps"]))
