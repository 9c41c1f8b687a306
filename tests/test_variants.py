"""The variants study's generator variants on the tiny model: each runs, and does what its name says."""

import json

import pytest
import torch

import gradmm.core.admm as admm
from gradmm.config import DPConfig, FilterConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, check_config, run_batch
from gradmm.core.data import TEMPLATES, Task
from gradmm.core.matching import class_targets, hidden_and_logits, joint_target, match_loss
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import first_label_ids
from gradmm.io.records import read_jsonl
from gradmm.methods.filtering import filter_rows
from gradmm.methods.generate import generate, matching_task
from gradmm.methods.registry import GENERATORS
from tests.conftest import toy_examples

TINY = ModelConfig(name="tiny-random", device="cpu")
FAST = dict(n_per_class=4, batch_size=2, outer_steps=2, inner_steps=2, topk=20, init_candidates=2, max_seq_len=10)


@pytest.fixture(scope="module")
def task():
    rows = toy_examples(20)
    return Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:30], rows[30:40])


def test_every_variant_is_a_valid_override_set():
    from gradmm.methods.registry import variant_overrides

    for name, sections in GENERATORS.items():
        assert set(sections) <= {"generate", "dp", "filter"}, name
        cfg = GenerateConfig(**sections.get("generate", {}))
        check_config(cfg)
        assert all(o.split(".")[0] in sections for o in variant_overrides(name))


def test_joint_target_is_the_mean_of_the_class_gradients_weighted_by_class_size(tiny, task):
    model, tok = tiny
    joint = joint_target(model, tok, task.pool, task.template)
    per_class = class_targets(model, tok, task.pool, task.template)
    n = [sum(ex.label == c for ex in task.pool) for c in range(2)]
    dense = sum(t.dense()[0] * n[c] for c, t in enumerate(per_class)) / sum(n)
    assert torch.allclose(joint.dense()[0], dense, atol=1e-10)
    # The real pool, each text with its own label, matches the joint target exactly (loss 0).
    H, logits = hidden_and_logits(model, tok, [ex.text for ex in task.pool], task.template)
    ys = first_label_ids(tok, task.template)
    y = torch.tensor([ys[ex.label] for ex in task.pool])
    assert match_loss(H, logits, y, joint).item() < 1e-9
    flipped = torch.tensor([ys[1 - ex.label] for ex in task.pool])
    assert match_loss(H, logits, flipped, joint).item() > 1e-6


def test_joint_generation_mixes_classes_in_every_batch(tiny, task, tmp_path):
    gen = GenerateConfig(**FAST, joint=True)
    metrics = generate(task, TINY, gen, DPConfig(), tmp_path, progress=False)
    rows = read_jsonl(tmp_path / "raw.jsonl")
    assert len(rows) == 8 and metrics["classes"][0]["class"] == "joint"
    for b in {r["batch"] for r in rows}:
        assert sorted(r["label"] for r in rows if r["batch"] == b) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "batches").glob("*.safetensors")) == [f"joint-batch{b}.safetensors" for b in range(4)]
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert {h["class"] for h in hist} == {"joint"}


def test_joint_needs_a_batch_divisible_by_the_classes(tiny, task, tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        generate(task, TINY, GenerateConfig(**{**FAST, "batch_size": 1, "n_per_class": 3}, joint=True), DPConfig(),
                 tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_matching_template_changes_the_layout_and_label_tokens(tiny, task, tmp_path):
    model, tok = tiny
    review = matching_task(task, GenerateConfig(template="review"))
    assert review.template == TEMPLATES["review"] and review.pool == task.pool
    with pytest.raises(ValueError, match="generate.template 'nope'"):
        matching_task(task, GenerateConfig(template="nope"))
    generate(task, TINY, GenerateConfig(**{**FAST, "max_seq_len": 16}, template="review"), DPConfig(), tmp_path,
             progress=False)
    rows = read_jsonl(tmp_path / "raw.jsonl")
    assert rows and not any("Sentiment" in r["text"] or "Review:" in r["text"] for r in rows)  # fixed parts cut


def test_lm_init_starts_from_sampled_allowed_tokens(tiny, task):
    model, tok = tiny
    target = class_targets(model, tok, task.pool, task.template)[1]
    layout = Layout(tok("Text:", add_special_tokens=False).input_ids, tok(" It was", add_special_tokens=False).input_ids, 10)
    allowed = allowed_token_mask(tok)
    cfg = GenerateConfig(topk=20, init_candidates=1, init="lm", outer_steps=1, inner_steps=1)
    problem = Problem(model, target, layout, tok("Write:", add_special_tokens=False).input_ids, allowed, cfg)
    ids = problem.sample_ids(3, seed=5)
    assert torch.equal(ids, problem.sample_ids(3, seed=5))  # reproducible
    assert allowed[ids[:, layout.free]].all()
    assert ids[:, :len(layout.prefix_ids)].tolist() == [layout.prefix_ids] * 3
    assert ids[:, layout.free.stop:].tolist() == [layout.suffix_ids] * 3
    X0, _, _ = admm.initialise(problem, 3, torch.Generator().manual_seed(0))
    # Every free position starts exactly on a token embedding (the LM's sample), not on a random vector.
    d = torch.cdist(X0[:, layout.free].reshape(-1, X0.shape[-1]), problem.emb)
    assert d.min(1).values.max().item() < 1e-3  # cdist round-off; token embeddings are ~0.1 apart
    with pytest.raises(ValueError, match="generate.init"):
        check_config(GenerateConfig(init="text"))


def test_rho_growth_multiplies_rho_every_outer_step(tiny, task):
    model, tok = tiny
    target = class_targets(model, tok, task.pool, task.template)[0]
    layout = Layout([], tok(" It was", add_special_tokens=False).input_ids, 8)
    cfg = GenerateConfig(topk=10, init_candidates=1, outer_steps=3, inner_steps=1, rho=0.01, rho_growth=3.0)
    out = run_batch(Problem(model, target, layout, [], allowed_token_mask(tok), cfg), 2, seed=0, progress=False)
    assert [round(h["rho"], 6) for h in out["history"]] == [0.01, 0.03, 0.09]
    with pytest.raises(ValueError, match="rho_growth"):
        check_config(GenerateConfig(rho_growth=0.5))


def test_pool_classifier_filter_drops_texts_it_labels_otherwise(tiny, task):
    model, tok = tiny
    rows = [{"text": ex.text, "label": ex.label, "match_loss": 0.0, "log_perplexity": 0.0} for ex in task.dev]
    rows += [{"text": ex.text, "label": 1 - ex.label, "match_loss": 0.0, "log_perplexity": 0.0} for ex in task.test]
    cfg = FilterConfig(n_per_class=100, classifier="pool_logreg", balance=False)
    kept, stats = filter_rows(model, tok, task, rows, cfg, progress=False)
    assert 0.0 <= stats["classifier_dev_accuracy"] <= 1.0
    # The toy classes are separable by their words: right labels are kept, flipped ones dropped.
    assert stats["classifier_dev_accuracy"] >= 0.8
    assert len(kept) > 0.8 * len(task.dev) and sum(r in kept for r in rows[len(task.dev):]) < 0.2 * len(task.test)
    with pytest.raises(ValueError, match="private pool"):
        filter_rows(model, tok, task, rows, cfg, private=True, progress=False)
    with pytest.raises(ValueError, match="filter.classifier"):
        filter_rows(model, tok, task, rows, FilterConfig(classifier="svm"), progress=False)


