import json

import pytest
import torch

import gradmm.core.admm as admm
from gradmm.config import DataConfig, DPConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, run_batch
from gradmm.core.matching import class_targets
from gradmm.core.projection import allowed_token_mask
from gradmm.methods.generate import build_targets, generate
from tests.conftest import toy_examples

TINY = ModelConfig(name="tiny-random", device="cpu")
FAST = dict(n_per_class=4, batch_size=2, outer_steps=3, inner_steps=3, topk=20, init_candidates=2, max_seq_len=10)


@pytest.fixture(scope="module")
def problem(tiny, toy_task):
    model, tok = tiny
    target = class_targets(model, tok, toy_task.pool, toy_task.template)[1]
    layout = Layout([], tok(" It was", add_special_tokens=False).input_ids, 10)
    return Problem(model, target, layout, tok("Write a review:", add_special_tokens=False).input_ids,
                   allowed_token_mask(tok), GenerateConfig(topk=20, init_candidates=4, lr=0.05, rho=0.01))


@pytest.fixture(scope="module")
def toy_task():
    from gradmm.core.data import TEMPLATES, Task
    rows = toy_examples(20)
    return Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:30], rows[30:40])


def test_matching_beats_random_tokens_and_keeps_the_template(problem):
    out = run_batch(problem, batch_size=4, seed=0, progress=False)
    ids = out["ids"]
    suffix = torch.tensor(problem.layout.suffix_ids)
    assert (ids[:, -len(suffix):] == suffix).all()
    assert problem.allowed[ids[:, problem.layout.free]].all()
    g = torch.Generator().manual_seed(1)
    allowed = problem.allowed.nonzero().squeeze(1)
    random_f = []
    for _ in range(8):
        rnd = ids.clone()
        rnd[:, problem.layout.free] = allowed[torch.randint(len(allowed), rnd[:, problem.layout.free].shape, generator=g)]
        random_f.append(problem.f_ids(rnd).item())
    assert out["f_Z"] < sorted(random_f)[len(random_f) // 2]  # better than the median random token batch
    f_X = [h["f_X"] for h in out["history"]]
    assert f_X[-1] < f_X[0]  # the continuous loss goes down


def test_determinism_and_resume_are_byte_identical(toy_data, tmp_path, monkeypatch):
    gen = GenerateConfig(**FAST)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "a", progress=False)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "b", progress=False)
    raw_a = (tmp_path / "a" / "raw.jsonl").read_bytes()
    assert raw_a == (tmp_path / "b" / "raw.jsonl").read_bytes()

    calls = {"n": 0}
    real_project = admm.Problem.project

    def dies_in_batch_1(self, E, progress, rho=0.0):  # a kill in the middle of class 0, batch 1
        calls["n"] += 1
        if calls["n"] == 6:  # batch 0 makes 4 projections; batch 1 checkpoints after its first
            raise KeyboardInterrupt
        return real_project(self, E, progress, rho)

    monkeypatch.setattr(admm.Problem, "project", dies_in_batch_1)
    with pytest.raises(KeyboardInterrupt):
        generate(toy_data, TINY, gen, DPConfig(), tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "batches" / "class0-batch0.safetensors").exists()
    assert (tmp_path / "c" / "batches" / "class0-batch1.ckpt").exists()  # mid-batch checkpoint
    monkeypatch.setattr(admm.Problem, "project", real_project)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "raw.jsonl").read_bytes() == raw_a
    assert (tmp_path / "c" / "history.jsonl").read_bytes() == (tmp_path / "a" / "history.jsonl").read_bytes()

    other = GenerateConfig(**{**FAST, "seed": 1})
    generate(toy_data, TINY, other, DPConfig(), tmp_path / "d", progress=False)
    assert (tmp_path / "d" / "raw.jsonl").read_bytes() != raw_a


def test_a_run_directory_with_other_params_is_refused_and_kept(toy_data, tmp_path):
    gen = GenerateConfig(**{**FAST, "n_per_class": 2, "outer_steps": 1, "inner_steps": 1})
    generate(toy_data, TINY, gen, DPConfig(), tmp_path, progress=False)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="different params"):
        generate(toy_data, TINY, GenerateConfig(**{**FAST, "rho": 0.5}), DPConfig(), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("gen, dp, message", [
    (dict(rho=0.0), {}, "rho must be > 0"),
    (dict(rho=-1.0), {}, "rho must be > 0"),
    (dict(topk=10**6), {}, "exceeds the allowed vocabulary"),
    (dict(max_seq_len=2), {}, "no free position"),
    (dict(n_per_class=3), {}, "multiple of batch_size"),
    ({}, dict(enabled=True, epsilon=0.0), "epsilon must be > 0"),
    ({}, dict(enabled=True, delta=1.0), r"delta must be in \(0, 1\)"),
    ({}, dict(enabled=True, delta=0.0), r"delta must be in \(0, 1\)"),
])
def test_bad_generation_input(toy_data, tmp_path, gen, dp, message):
    with pytest.raises(ValueError, match=message):
        generate(toy_data, TINY, GenerateConfig(**{**FAST, **gen}), DPConfig(**dp), tmp_path / "run", progress=False)


def test_empty_class_is_refused(tmp_path):
    path = tmp_path / "one_class.jsonl"
    path.write_text("".join(json.dumps({"text": f"t {i}", "label": 0}) + "\n" for i in range(10)))
    cfg = DataConfig(dataset="local", source=str(path), label_names=["a", "b"], pool_per_class=2,
                     dev_per_class=1, test_per_class=1)
    with pytest.raises(ValueError, match="class 'b' has no examples"):
        generate(cfg, TINY, GenerateConfig(**FAST), DPConfig(), tmp_path / "run", progress=False)


def test_dp_targets_report_snr(tiny, toy_task):
    model, tok = tiny
    gen = GenerateConfig()
    _, snr_hi = build_targets(model, tok, toy_task, gen, DPConfig(enabled=True, epsilon=10.0))
    targets, snr_lo = build_targets(model, tok, toy_task, gen, DPConfig(enabled=True, epsilon=0.05))
    assert all(t.noise_W is not None for t in targets)
    assert all(lo < hi for lo, hi in zip(snr_lo, snr_hi))


@pytest.mark.parametrize("options", [dict(projection="end_only"), dict(order="probable_then_nearest"),
                                     dict(adaptive_rho=True), dict(matching_weight=0.0)])
def test_ablation_options_run_and_emit_allowed_tokens(problem, options):
    import dataclasses
    variant = Problem(problem.model, problem.target, problem.layout, problem.decoding_prefix, problem.allowed,
                      dataclasses.replace(problem.cfg, outer_steps=2, inner_steps=2, **options))
    out = run_batch(variant, batch_size=2, seed=0, progress=False)
    assert variant.allowed[out["ids"][:, variant.layout.free]].all()
    assert len(out["history"]) == 2
    if options.get("projection") == "end_only":
        assert "f_Z" not in out["history"][0]  # no Z-step inside the loop


def test_a_refused_run_leaves_the_directory_free_for_the_corrected_one(toy_data, tmp_path):
    with pytest.raises(ValueError, match="no free position"):
        generate(toy_data, TINY, GenerateConfig(**{**FAST, "max_seq_len": 2}), DPConfig(), tmp_path, progress=False)
    assert not (tmp_path / "run_config.json").exists()
    generate(toy_data, TINY, GenerateConfig(**{**FAST, "n_per_class": 2, "outer_steps": 1, "inner_steps": 1}),
             DPConfig(), tmp_path, progress=False)
    assert (tmp_path / "raw.jsonl").exists()


def test_a_checkpoint_is_data_and_resumes_on_the_cpu(tiny, toy_task, problem, tmp_path):
    """Checkpoints are safetensors saved from the CPU: no pickle to load, no device tag to break a GPU→CPU move."""
    from safetensors.torch import load_file
    cfg = GenerateConfig(topk=20, init_candidates=2, lr=0.05, rho=0.01, outer_steps=2, inner_steps=2)
    small = Problem(problem.model, problem.target, problem.layout, problem.decoding_prefix, problem.allowed, cfg)
    ckpt = tmp_path / "class0-batch0.ckpt"
    done = run_batch(small, batch_size=2, seed=0, checkpoint=ckpt, progress=False)
    tensors = load_file(ckpt)  # a plain safetensors file
    assert {"X", "Lam", "Z_ids", "adam.exp_avg", "adam.exp_avg_sq"} <= set(tensors)
    assert all(t.device.type == "cpu" for t in tensors.values())
    resumed = run_batch(small, batch_size=2, seed=0, checkpoint=ckpt, progress=False)
    assert torch.equal(resumed["ids"], done["ids"])
    assert resumed["f_Z"] == done["f_Z"]
