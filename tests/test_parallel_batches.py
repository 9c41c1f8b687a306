"""Several ADMM batches stepped together (`generate.parallel_batches`) and the early stop (`stop_patience`)."""

import json

import pytest
import torch

import gradmm.core.admm as admm
from gradmm.config import DPConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, check_config, run_batch, run_batches
from gradmm.core.matching import class_targets
from gradmm.core.projection import allowed_token_mask
from gradmm.methods.generate import generate

TINY = ModelConfig(name="tiny-random", device="cpu")
# 3 batches per class: with parallel_batches 2 a class is one unit of 2 batches and one of 1
FAST = dict(n_per_class=6, batch_size=2, outer_steps=3, inner_steps=3, topk=20, init_candidates=2, max_seq_len=10)


def _problem(tiny, toy_task, **cfg):
    model, tok = tiny
    target = class_targets(model, tok, toy_task.pool, toy_task.template)[1]
    layout = Layout([], tok(" It was", add_special_tokens=False).input_ids, 10)
    return Problem(model, target, layout, tok("Write a review:", add_special_tokens=False).input_ids,
                   allowed_token_mask(tok), GenerateConfig(topk=20, init_candidates=2, lr=0.05, rho=0.01, **cfg))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batches_stepped_together_write_what_batches_one_at_a_time_write(toy_data, tmp_path):
    generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), tmp_path / "one", progress=False)
    generate(toy_data, TINY, GenerateConfig(**FAST, parallel_batches=2), DPConfig(), tmp_path / "two", progress=False)
    one, two = _rows(tmp_path / "one" / "raw.jsonl"), _rows(tmp_path / "two" / "raw.jsonl")
    assert [r["text"] for r in one] == [r["text"] for r in two]  # each batch keeps its own seed and maths
    # bigger matrix products may sum in another order: the same numbers up to float rounding
    assert [r["match_loss"] for r in two] == pytest.approx([r["match_loss"] for r in one], abs=1e-5)
    assert [r["log_perplexity"] for r in two] == pytest.approx([r["log_perplexity"] for r in one], abs=1e-4)
    locks = sorted(p.name for p in (tmp_path / "two" / "batches" / ".locks").iterdir())
    assert "class0-batches0-1.safetensors" in locks and "class0-batch2.safetensors" in locks  # units of 2 and 1


def test_each_batch_gets_the_gradient_of_its_own_match_only(tiny, toy_task):
    problem = _problem(tiny, toy_task)
    X = torch.randn(6, 10, problem.emb.shape[1], generator=torch.Generator().manual_seed(0)) * 3
    Xs = [x.clone().requires_grad_(True) for x in X.split(2)]
    f = problem.f_each(3, X=torch.cat(Xs))
    grads = torch.autograd.grad(f.sum(), Xs)
    for x, fi, g in zip(Xs, f, grads):
        alone = x.detach().clone().requires_grad_(True)
        f_alone = problem.f(alone)
        assert fi.item() == pytest.approx(f_alone.item(), abs=1e-5)
        assert torch.allclose(torch.autograd.grad(f_alone, alone)[0], g, atol=1e-5)


def test_a_unit_interrupted_mid_run_resumes_byte_identical(toy_data, tmp_path, monkeypatch):
    gen = GenerateConfig(**FAST, parallel_batches=2)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "ref", progress=False)
    real, calls = admm.outer_iteration, {"n": 0}

    def dies_in_the_second_iteration(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(admm, "outer_iteration", dies_in_the_second_iteration)
    with pytest.raises(KeyboardInterrupt):
        generate(toy_data, TINY, gen, DPConfig(), tmp_path / "cut", progress=False)
    assert len(list((tmp_path / "cut" / "batches").glob("*.ckpt"))) == 2  # both batches of the unit saved t = 1
    monkeypatch.setattr(admm, "outer_iteration", real)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "raw.jsonl").read_bytes() == (tmp_path / "ref" / "raw.jsonl").read_bytes()


def test_a_batch_resumed_further_on_waits_for_the_others(tiny, toy_task, tmp_path):
    problem = _problem(tiny, toy_task, outer_steps=4, inner_steps=2)
    ref = run_batches(problem, 2, [5, 6], progress=False)
    ahead = tmp_path / "ahead.ckpt"
    short = _problem(tiny, toy_task, outer_steps=2, inner_steps=2)
    real_finish = admm.finish_batch
    admm.finish_batch = lambda *a: {}  # keep the checkpoint of batch 0 at t = 2, as if the run had stopped there
    try:
        run_batches(short, 2, [5], [ahead], progress=False)
    finally:
        admm.finish_batch = real_finish
    out = run_batches(problem, 2, [5, 6], [ahead, tmp_path / "fresh.ckpt"], progress=False)
    for a, b in zip(out, ref):
        assert torch.equal(a["ids"], b["ids"]) and len(a["history"]) == 4
        assert [h["t"] for h in a["history"]] == [0, 1, 2, 3]


def test_stop_patience_stops_each_batch_when_its_best_f_Z_is_that_old(tiny, toy_task):
    lengths = []
    for patience in (1, 2):
        problem = _problem(tiny, toy_task, outer_steps=8, inner_steps=2, stop_patience=patience)
        for out in run_batches(problem, 2, [0, 1, 2], progress=False):
            f_Z = [h["f_Z"] for h in out["history"]]
            best_t = [min(range(t + 1), key=lambda i: (f_Z[i], i)) for t in range(len(f_Z))]
            stale = [t - best_t[t] >= patience for t in range(len(f_Z))]
            assert not any(stale[:-1])  # it ran while f(Z) was still improving ...
            assert stale[-1] or len(f_Z) == 8  # ... and stopped at the first Z-step that was `patience` stale
            assert out["outer_steps_run"] == len(f_Z)
            lengths.append(len(f_Z))
    assert min(lengths) < 8  # some batch did stop early
    never = run_batch(_problem(tiny, toy_task, outer_steps=8, inner_steps=2), 2, seed=0, progress=False)
    assert never["outer_steps_run"] == 8


def test_joint_batches_are_not_stepped_together():
    with pytest.raises(ValueError, match="parallel_batches"):
        check_config(GenerateConfig(joint=True, parallel_batches=2))
