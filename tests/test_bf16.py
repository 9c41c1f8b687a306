"""bf16 on the CPU (`model.dtype`): chosen only where the CPU has bf16 units, an fp32 fallback for `auto`, X kept in
fp32 while the frozen model runs in bf16, fine-tuning with fp32 master weights. The CPU's flags are patched, so
these run the same on a CI machine with or without the units (bf16 arithmetic works everywhere, only slower)."""

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from gradmm.config import FinetuneConfig, GenerateConfig
from gradmm.core import models
from gradmm.core.admm import Layout, Problem, run_batch
from gradmm.core.data import TEMPLATES, Task
from gradmm.core.matching import class_targets
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import first_label_ids
from gradmm.methods.finetune import Bf16Compute, batch_order, classification_loss, train_copy
from tests.conftest import toy_examples

CPU = torch.device("cpu")


@pytest.fixture
def with_units(monkeypatch):
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512f", "amx_bf16"})


@pytest.fixture
def without_units(monkeypatch):
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2"})


def test_auto_falls_back_to_fp32_without_bf16_units(without_units, caplog):
    with caplog.at_level(logging.INFO, logger="gradmm"):
        assert models.resolve_dtype("auto", CPU) == "float32"
    assert "float32 (no bf16 units: the CPU lacks amx_bf16 and avx512_bf16)" in caplog.text
    with pytest.raises(ValueError, match="no bf16 units .* use 'float32' or 'auto'"):
        models.resolve_dtype("bfloat16", CPU)
    model, _ = models.load_model("tiny-random", device="cpu", dtype="auto")
    assert model.dtype == torch.float32


def test_auto_picks_bf16_with_units_and_bad_dtypes_are_named(with_units, caplog):
    with caplog.at_level(logging.INFO, logger="gradmm"):
        assert models.resolve_dtype("auto", CPU) == "bfloat16"
    assert "bfloat16 (amx_bf16)" in caplog.text
    assert models.resolve_dtype("float32", CPU) == "float32"
    with pytest.raises(ValueError, match="unknown dtype 'fp16': use one of"):
        models.resolve_dtype("fp16", CPU)


def _task() -> Task:
    rows = toy_examples(20)
    return Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:30], rows[30:40])


def _problem(model, tok, task):
    target = class_targets(model, tok, task.pool, task.template)[1]
    layout = Layout([], tok(" It was", add_special_tokens=False).input_ids, 10)
    return Problem(model, target, layout, tok("Write a review:", add_special_tokens=False).input_ids,
                   allowed_token_mask(tok), GenerateConfig(topk=20, init_candidates=2, lr=0.05, rho=0.01,
                                                           outer_steps=2, inner_steps=2))


def test_bf16_x_step_keeps_x_in_fp32_and_follows_the_fp32_gradient(with_units):
    task = _task()
    grads, outs = {}, {}
    X0 = None
    for dtype in ("float32", "bfloat16"):
        model, tok = models.load_model("tiny-random", device="cpu", dtype=dtype)
        problem = _problem(model, tok, task)
        if X0 is None:
            X0 = problem.freeze(models.input_embeddings(model)[torch.arange(40).reshape(4, 10) * 7].clone())
        X = X0.clone().float().requires_grad_(True)
        grads[dtype] = torch.autograd.grad(problem.f(X), X)[0]
        outs[dtype] = run_batch(problem, batch_size=4, seed=0, progress=False)
    assert grads["bfloat16"].dtype == torch.float32  # X and its gradient stay fp32 (Adam's master copy)
    assert F.cosine_similarity(grads["float32"].flatten(), grads["bfloat16"].flatten(), dim=0) > 0.99
    assert outs["bfloat16"]["ids"].shape == outs["float32"]["ids"].shape
    assert outs["bfloat16"]["f_Z"] == outs["bfloat16"]["f_Z"]  # a number, not NaN


def test_bf16_fine_tuning_trains_an_fp32_copy(with_units):
    task = _task()
    base, tok = models.load_model("tiny-random", device="cpu", dtype="bfloat16")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model, losses = train_copy(base, tok, task.pool[:8], task.template, FinetuneConfig(steps=3, batch_size=4),
                               1e-3, seed=0, progress=False)
    assert next(model.parameters()).dtype == torch.float32  # the master weights
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base model is untouched
    assert base.dtype == torch.bfloat16 and len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v.to(torch.bfloat16), before[k])]
    assert moved  # it trained


def test_bf16_fine_tuning_steps_a_bf16_copy_of_the_fp32_master_weights(with_units):
    """Each step casts the masters to the bf16 copy, runs forward and backward there, and hands fp32 gradients back."""
    task = _task()
    base, tok = models.load_model("tiny-random", device="cpu", dtype="bfloat16")
    train, ids = task.pool[:4], first_label_ids(tok, task.template)
    master = copy.deepcopy(base).float().requires_grad_(True)
    compute = Bf16Compute(base, master)
    compute.pull()
    assert all(q.dtype == torch.bfloat16 and torch.equal(q, p.to(torch.bfloat16)) for p, q in zip(compute.master, compute.compute))
    classification_loss(compute.model, tok, train, task.template, ids).backward()
    compute.push_grads()
    assert all(p.grad.dtype == torch.float32 and torch.equal(p.grad, q.grad.float())
               for p, q in zip(compute.master, compute.compute) if q.grad is not None)
    first_batch = [train[i] for i in batch_order(len(train), 1, 4, seed=0)[0]]
    with torch.no_grad():
        first = classification_loss(base, tok, first_batch, task.template, ids).item()
    _, losses = train_copy(base, tok, train, task.template, FinetuneConfig(steps=2, batch_size=4), 1e-3, seed=0,
                           progress=False)
    assert losses[0] == first  # step 1 runs on the bf16 weights themselves: the masters start as their exact copy
    _, lora_losses = train_copy(base, tok, train, task.template, FinetuneConfig(steps=2, batch_size=4, lora=True,
                                   lora_target_modules=["q_proj", "v_proj"]), 1e-3, seed=0, progress=False)
    assert len(lora_losses) == 2 and all(math.isfinite(v) for v in lora_losses)  # LoRA keeps autocast
