import copy

import pytest
import torch

from gradmm.core.models import input_embeddings
from gradmm.core.perplexity import log_perplexity
from gradmm.core.projection import (
    ORDERS,
    allowed_token_mask,
    embedding_only_decode,
    nearest_tokens,
    project_to_tokens,
    project_to_tokens_naive,
)


@pytest.fixture(scope="module")
def tiny3(tiny):  # conftest's session-wide tiny-random model, with its allowed-token mask
    model, tok = tiny
    return model, tok, allowed_token_mask(tok)


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_allowed_mask_keeps_words_only(tiny3):
    _, tok, allowed = tiny3
    assert allowed.shape == (len(tok),) and allowed.dtype == torch.bool
    for i in tok.all_special_ids + list(tok.added_tokens_decoder):
        assert not allowed[i]
    assert allowed[tok.convert_tokens_to_ids("Ġgreat")] and allowed[tok.convert_tokens_to_ids("great")]
    for text in ["!", "...", " ,", "1", "7", " 2", "'s", " -", "\n"]:
        for i in ids_of(tok, text):
            assert not allowed[i], (text, tok.decode([i]))
    for i in allowed.nonzero()[:, 0].tolist()[::97]:  # a sample of the allowed ones: letters, one leading space
        text = tok.decode([i])
        assert text.lstrip(" ").isascii() and text.lstrip(" ").isalpha() and len(text.lstrip(" ")) <= 17
        assert not text.startswith("  ")


def test_allowed_mask_bans_ids_the_tokenizer_lacks(tiny3):
    _, tok, allowed = tiny3
    longer = allowed_token_mask(tok, num_embeddings=len(tok) + 50)  # padded embedding rows (Phi-style)
    assert longer.shape == (len(tok) + 50,) and not longer[len(tok):].any()
    assert torch.equal(longer[:len(tok)], allowed)
    assert torch.equal(allowed_token_mask(tok, num_embeddings=1000), allowed[:1000])


def random_setup(tok, B=3, L=8, d=32, seed=0):
    torch.manual_seed(seed)
    E = torch.randn(B, L, d)
    prefix = ids_of(tok, "You are a movie critic. Write a great review:")
    return E, prefix, ids_of(tok, "Review:"), ids_of(tok, " It was")


@pytest.mark.parametrize("order", ORDERS)
def test_projection_keeps_fixed_tokens_and_emits_allowed_ones(tiny3, order):
    model, tok, allowed = tiny3
    E, prefix, fp, fs = random_setup(tok)
    ids, logppl = project_to_tokens(model, E, prefix, allowed, 5, order=order, fixed_prefix_ids=fp,
                                    fixed_suffix_ids=fs, progress=False)
    assert ids.shape == E.shape[:2] and logppl.shape == (E.shape[0],)
    assert (ids[:, :len(fp)] == torch.tensor(fp)).all()
    assert (ids[:, -len(fs):] == torch.tensor(fs)).all()
    assert allowed[ids[:, len(fp):-len(fs)]].all()
    assert torch.isfinite(logppl).all() and (logppl > 0).all()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("layout", ["all", "none", "suffix_only", "fixed_prefix_only"])
def test_cached_equals_naive_and_logppl_matches(tiny3, order, layout):
    model, tok, allowed = tiny3
    E, prefix, fp, fs = random_setup(tok)
    prefix, fp, fs = {"all": (prefix, fp, fs), "none": ([], None, None), "suffix_only": (prefix, None, fs),
                      "fixed_prefix_only": ([], fp, None)}[layout]
    kw = dict(order=order, fixed_prefix_ids=fp, fixed_suffix_ids=fs, progress=False)
    ids, logppl = project_to_tokens(model, E, prefix, allowed, 5, **kw)
    ids_naive, logppl_naive = project_to_tokens_naive(model, E, prefix, allowed, 5, **kw)
    assert torch.equal(ids, ids_naive)
    torch.testing.assert_close(logppl, logppl_naive, atol=1e-4, rtol=0)
    start, end = len(fp or []), E.shape[1] - len(fs or [])
    torch.testing.assert_close(log_perplexity(model, ids, prefix, start=start, end=end), logppl, atol=1e-4, rtol=0)


def test_untied_model_and_no_bos(tiny3, tiny_untied):
    _, tok, allowed = tiny3
    model = copy.deepcopy(tiny_untied[0])  # Phi: untied head with a bias; here also without a BOS id
    model.config.bos_token_id = None
    model.generation_config.bos_token_id = None
    E, prefix, fp, fs = random_setup(tok)
    for order in ORDERS:
        ids, logppl = project_to_tokens(model, E, [], allowed, 5, order=order, progress=False)
        ids_naive, _ = project_to_tokens_naive(model, E, [], allowed, 5, order=order, progress=False)
        assert torch.equal(ids, ids_naive)
        # with nothing to condition on, the first token is the nearest allowed one and is not scored
        assert torch.equal(ids[:, 0], embedding_only_decode(E[:, :1], input_embeddings(model), allowed)[:, 0])
        torch.testing.assert_close(log_perplexity(model, ids, []), logppl, atol=1e-4, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
def test_exact_embeddings_with_k1_are_reproduced(tiny3, order):
    model, tok, allowed = tiny3
    target = torch.tensor([ids_of(tok, " the movie was a great surprise")[:6], ids_of(tok, " I did not like it at all")[:6]])
    assert allowed[target].all()
    E = input_embeddings(model)[target].detach().clone()
    fs = ids_of(tok, " It was")
    E_full = torch.cat([E, torch.zeros(2, len(fs), E.shape[-1])], dim=1)
    # k = 1 leaves the LM no choice among the nearest; among all allowed tokens the nearest is the token itself
    k = 1 if order != "probable_then_nearest" else int(allowed.sum())
    ids, _ = project_to_tokens(model, E_full, [], allowed, k, order=order, fixed_suffix_ids=fs, progress=False)
    assert torch.equal(ids, torch.cat([target, torch.tensor([fs, fs])], dim=1))
    assert torch.equal(embedding_only_decode(E, input_embeddings(model), allowed), target)
    assert torch.equal(nearest_tokens(E, input_embeddings(model), allowed, 3)[..., 0], target)


def test_bad_k_raises(tiny3):
    model, tok, allowed = tiny3
    E = torch.randn(1, 4, 32)
    n = int(allowed.sum())
    for k in (0, n + 1):
        with pytest.raises(ValueError, match=rf"k={k}.*{n}"):
            project_to_tokens(model, E, [], allowed, k, progress=False)
        with pytest.raises(ValueError, match=rf"k={k}.*{n}"):
            nearest_tokens(E, input_embeddings(model), allowed, k)
    with pytest.raises(ValueError, match="order"):
        project_to_tokens(model, E, [], allowed, 3, order="random", progress=False)
    with pytest.raises(ValueError, match="free"):
        project_to_tokens(model, E, [], allowed, 3, fixed_suffix_ids=[5, 6, 7, 8], progress=False)


def test_log_perplexity_right_padding(tiny3):
    model, tok, _ = tiny3
    prefix = ids_of(tok, "Write a review:")
    a, b = ids_of(tok, " a fine film with great acting"), ids_of(tok, " dull")
    padded = torch.tensor([a, b + [0] * (len(a) - len(b))])
    mask = torch.tensor([[1] * len(a), [1] * len(b) + [0] * (len(a) - len(b))])
    got = log_perplexity(model, padded, prefix, mask=mask, batch_size=1)
    torch.testing.assert_close(got[0], log_perplexity(model, torch.tensor([a]), prefix)[0])
    torch.testing.assert_close(got[1], log_perplexity(model, torch.tensor([b]), prefix)[0])
    # by hand: one forward of prefix + text, mean NLL of the text tokens
    seq = torch.tensor([prefix + a])
    logp = model(input_ids=seq).logits[0, :-1].float().log_softmax(-1)
    nll = -logp[torch.arange(seq.shape[1] - 1), seq[0, 1:]][len(prefix) - 1:]
    torch.testing.assert_close(got[0], nll.mean(), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_smollm2_vocabulary_and_exact_sentence(smollm2):
    model, tok = smollm2
    allowed = allowed_token_mask(tok, input_embeddings(model).shape[0])
    assert 46_000 <= int(allowed.sum()) <= 48_500
    sentence = ids_of(tok, " the film is a quiet and moving portrait of a family")
    assert allowed[sentence].all()
    fs = ids_of(tok, " It was")
    E = input_embeddings(model)[torch.tensor(sentence + fs)][None].detach().clone()
    prefix = ids_of(tok, "Write a positive movie review:")
    ids, logppl = project_to_tokens(model, E, prefix, allowed, 1, fixed_suffix_ids=fs, progress=False)
    assert ids[0].tolist() == sentence + fs
    torch.testing.assert_close(log_perplexity(model, ids, prefix, end=len(sentence)), logppl, atol=1e-4, rtol=0)


def test_proximal_order_moves_from_the_lm_choice_to_the_nearest_token_as_rho_grows(tiny3):
    model, tok, allowed = tiny3
    emb = input_embeddings(model).detach()
    ids = torch.tensor([ids_of(tok, " the film was a great story of love")[:6]] * 2)
    E = emb[ids] + 0.01 * torch.randn(ids.shape + (emb.shape[1],), generator=torch.Generator().manual_seed(0))
    prefix = ids_of(tok, "Write a review:")
    lm_pick, _ = project_to_tokens(model, E, prefix, allowed, 20, "nearest_then_probable", progress=False)
    small, _ = project_to_tokens(model, E, prefix, allowed, 20, "proximal", progress=False, rho=0.0)
    assert torch.equal(small, lm_pick)  # ρ = 0: the LM's favourite among the k nearest
    large, _ = project_to_tokens(model, E, prefix, allowed, 20, "proximal", progress=False, rho=1e6)
    assert torch.equal(large, ids)  # ρ → ∞: the nearest token, so a Z already at X is a fixed point
    naive, _ = project_to_tokens_naive(model, E, prefix, allowed, 20, "proximal", progress=False, rho=3.0)
    cached, _ = project_to_tokens(model, E, prefix, allowed, 20, "proximal", progress=False, rho=3.0)
    assert torch.equal(naive, cached)


def test_teacher_ids_fix_the_context_of_each_choice(tiny3):
    from gradmm.core.perplexity import context_ids

    model, tok, allowed = tiny3
    E, prefix, fp, fs = random_setup(tok)
    kw = dict(fixed_prefix_ids=fp, fixed_suffix_ids=fs, progress=False)
    ids, _ = project_to_tokens(model, E, prefix, allowed, 5, **kw)
    free = slice(len(fp), E.shape[1] - len(fs))
    own, _ = project_to_tokens(model, E, prefix, allowed, 5, teacher_ids=ids[:, free], **kw)
    assert torch.equal(own, ids)  # fed its own choices, the decoding is unchanged
    teacher = torch.flip(ids[:, free], [1])
    forced, _ = project_to_tokens(model, E, prefix, allowed, 5, teacher_ids=teacher, **kw)
    # each choice is the most probable of position j's 5 nearest tokens after the context and the teacher's tokens
    knn = nearest_tokens(E[:, free], input_embeddings(model), allowed, 5)
    ctx = context_ids(model, prefix, torch.tensor(fp), E.device)
    with torch.no_grad():
        logits = model(input_ids=torch.cat([ctx.expand(E.shape[0], -1), teacher], 1)).logits
    for j in range(teacher.shape[1]):
        next_logits = logits[:, ctx.numel() - 1 + j]
        expected = knn[:, j].gather(1, next_logits.gather(1, knn[:, j]).argmax(-1, keepdim=True))[:, 0]
        assert torch.equal(forced[:, len(fp) + j], expected)
    assert not torch.equal(forced, ids)  # and the context mattered
