import copy

import pytest
import torch
import torch.nn.functional as F

from gradmm.core.data import TEMPLATES, Example
from gradmm.core.matching import (
    Target,
    class_targets,
    cosine_distance_to_target,
    explicit_head_grad,
    head_grads,
    head_logits,
    hidden_and_logits,
    match_loss,
    per_sample_match_loss,
    residuals,
)
from gradmm.core.models import last_hidden, output_head
from gradmm.core.scoring import first_label_ids

TEMPLATE = TEMPLATES["paper"]
TEXTS = ["ok", "a wonderful, moving film", "terrible acting and an awful plot that goes on and on and on",
         "i loved it", "a dull, boring mess of a movie"]
EXAMPLES = [Example(t, i % 2) for i, t in enumerate(TEXTS + [t + " again" for t in TEXTS])]


@pytest.fixture(params=["tied", "untied"])
def model_tok(request, tiny, tiny_untied):
    return tiny if request.param == "tied" else tiny_untied


_TARGETS = {}


def targets_of(model, tok, center=None):
    """class_targets of EXAMPLES, computed once per model and centring (the forwards dominate test time)."""
    key = (id(model), center)
    if key not in _TARGETS:
        _TARGETS[key] = class_targets(model, tok, EXAMPLES, TEMPLATE, center=center)
    return _TARGETS[key]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _dense_cos_loss(g, G):
    """The official distance from dense tensors: mean over matched tensors of 1 − cos."""
    pairs = [(g[0], G[0])] + ([(g[1], G[1])] if G[1] is not None else [])
    return sum(1 - F.cosine_similarity(a.flatten(), b.flatten(), dim=0) for a, b in pairs) / len(pairs)


def _fake_inputs(model, B=3, seed=0, dtype=torch.float64):
    """Synthetic-like hidden states and their logits through the real head, in float64."""
    gen = torch.Generator().manual_seed(seed)
    W, b = output_head(model)
    h = torch.randn(B, W.shape[1], generator=gen, dtype=dtype)
    return h, F.linear(h, W.to(dtype), None if b is None else b.to(dtype))


def test_closed_form_equals_autograd_on_the_head(model_tok):
    """g_W = mean (p − e_y) hᵀ (+ g_b = mean (p − e_y)) is the gradient of the CE w.r.t. the head only."""
    model, tok = model_tok
    W, b = output_head(model)
    y = first_label_ids(tok, TEMPLATE)[1]
    enc = [tok(TEMPLATE.prompt(t), add_special_tokens=False).input_ids for t in TEXTS[:2]]
    h = torch.cat([last_hidden(model, input_ids=torch.tensor([e])) for e in enc]).double()
    # A detached float64 copy of W used only in the head: for the tied model this is the output side only.
    W_, b_ = W.detach().double().requires_grad_(), None if b is None else b.detach().double().requires_grad_()
    logits = F.linear(h, W_, b_)
    F.cross_entropy(logits, torch.full((len(h),), y)).backward()
    g_W, g_b = explicit_head_grad(h, logits.detach(), y, bias=b is not None)
    assert _rel(g_W, W_.grad) < 1e-10
    if b is None:
        assert g_b is None
    else:
        assert _rel(g_b, b_.grad) < 1e-10


def test_class_target_equals_full_model_autograd(tiny_untied):
    """The batched, left-padded float32 target equals the average of unpadded per-example parameter grads."""
    model, tok = tiny_untied
    target = class_targets(model, tok, EXAMPLES, TEMPLATE, batch_size=3)[1]
    texts = [ex.text for ex in EXAMPLES if ex.label == 1]
    ref = copy.deepcopy(model).double()
    head = ref.get_output_embeddings()
    head.requires_grad_(True)
    y = first_label_ids(tok, TEMPLATE)[1]
    for t in texts:  # one sequence at a time, no padding, true parameter gradient through the model
        ids = torch.tensor([tok(TEMPLATE.prompt(t), add_special_tokens=False).input_ids])
        loss = F.cross_entropy(ref(input_ids=ids).logits[:, -1], torch.tensor([y])) / len(texts)
        loss.backward()
    G_W, G_b = target.dense()
    assert target.n == len(texts) and target.label_id == y and target.has_bias
    assert _rel(G_W, head.weight.grad) < 1e-5
    assert _rel(G_b, head.bias.grad) < 1e-5


def test_batching_does_not_change_hidden_states(tiny):
    model, tok = tiny
    H1, z1 = hidden_and_logits(model, tok, TEXTS, TEMPLATE, batch_size=1)
    H3, z3 = hidden_and_logits(model, tok, TEXTS, TEMPLATE, batch_size=3)
    assert torch.allclose(H1, H3, atol=1e-5) and torch.allclose(z1, z3, atol=1e-4)
    assert torch.allclose(head_logits(model, H1), z1, atol=1e-6)
    R, H = head_grads(model, tok, TEXTS, TEMPLATE, label=0)
    assert torch.allclose(R, residuals(z1, first_label_ids(tok, TEMPLATE)[0]), atol=1e-6)
    assert torch.allclose(R.sum(-1), torch.zeros(len(TEXTS)), atol=1e-5)  # p − e_y sums to 0


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
def test_gram_form_equals_dense_cosine(model_tok, centred, noisy):
    model, tok = model_tok
    target = targets_of(model, tok, center="pool" if centred else None)[0]
    if noisy:  # a dense noise term of the DP kind, plus uneven clipping-like weights
        gen = torch.Generator().manual_seed(1)
        V, d = target.R.shape[1], target.H.shape[1]
        target = Target(R=target.R, H=target.H, label_id=target.label_id, has_bias=target.has_bias,
                        weight=torch.rand(target.n, generator=gen, dtype=torch.float64), center=target.center,
                        noise_W=1e-3 * torch.randn(V, d, generator=gen),
                        noise_b=1e-3 * torch.randn(V, generator=gen) if target.has_bias else None)
    G = target.dense()
    assert G[0].norm().item() ** 2 == pytest.approx(target.sq_norm_W, rel=1e-9)
    h, logits = _fake_inputs(model, B=4)
    g = explicit_head_grad(h, logits, target.label_id, center=target.center, bias=target.has_bias)
    expected = _dense_cos_loss(g, G)
    got = match_loss(h, logits, target.label_id, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert 1e-4 < got.item() < 2  # not trivially 0 (the inputs are random)
    # Per sample: each sequence alone against the target.
    per = per_sample_match_loss(h, logits, target.label_id, target)
    for i in range(len(h)):
        gi = explicit_head_grad(h[i:i + 1], logits[i:i + 1], target.label_id, target.center, target.has_bias)
        assert per[i].item() == pytest.approx(_dense_cos_loss(gi, G).item(), rel=1e-9, abs=1e-12)
        alone = match_loss(h[i:i + 1], logits[i:i + 1], target.label_id, target)
        assert per[i].item() == pytest.approx(alone.item(), rel=1e-9)
    assert not torch.allclose(per, per[:1].expand_as(per))


def test_match_loss_gradients_equal_dense_autograd(model_tok):
    """Backprop through the Gram form gives the same d f/d h and d f/d logits as through the dense form."""
    model, tok = model_tok
    target = targets_of(model, tok)[1]
    G = target.dense()
    h, logits = _fake_inputs(model, B=3, seed=2)
    grads = []
    for gram in (True, False):
        h_, z_ = h.clone().requires_grad_(), logits.clone().requires_grad_()
        if gram:
            loss = match_loss(h_, z_, target.label_id, target)
        else:
            loss = _dense_cos_loss(explicit_head_grad(h_, z_, target.label_id, bias=target.has_bias), G)
        grads.append(torch.autograd.grad(loss, (h_, z_)))
    for a, b in zip(*grads):
        assert b.norm() > 0 and _rel(a, b) < 1e-8


def test_real_examples_match_their_own_target(model_tok):
    model, tok = model_tok
    target = targets_of(model, tok)[1]
    texts = [ex.text for ex in EXAMPLES if ex.label == 1]
    own = cosine_distance_to_target(model, tok, texts, TEMPLATE, target)
    other = cosine_distance_to_target(model, tok, ["zz qq xx", "12345 67890 !!"], TEMPLATE, target)
    assert abs(own.item()) < 1e-9 < other.item()
    per = cosine_distance_to_target(model, tok, texts, TEMPLATE, target, per_sample=True)
    H, logits = hidden_and_logits(model, tok, texts, TEMPLATE)
    assert per.shape == (len(texts),)
    assert torch.allclose(per, per_sample_match_loss(H, logits, target.label_id, target))
    assert (per > 1e-6).all()  # a single example is not the class average


def test_centring_uses_the_pool_mean(tiny):
    model, tok = tiny
    targets = targets_of(model, tok, center="pool")
    H, _ = hidden_and_logits(model, tok, [ex.text for ex in EXAMPLES], TEMPLATE)
    assert torch.allclose(targets[0].center, H.mean(0), atol=1e-6)
    assert targets[0].center is targets[1].center
    # The stored hidden states are centred: over both classes they average to zero.
    assert torch.cat([t.H for t in targets]).mean(0).abs().max() < 1e-6
    plain = targets_of(model, tok)
    assert plain[0].center is None and not torch.allclose(plain[0].H, targets[0].H)


def test_label_ids_follow_the_template(tiny):
    """The label is the first token of each label word with its leading space (" great", not "great")."""
    model, tok = tiny
    targets = targets_of(model, tok)
    spaced = [tok(w, add_special_tokens=False).input_ids[0] for w in (" bad", " great")]
    assert [t.label_id for t in targets] == spaced
    assert spaced[1] != tok("great", add_special_tokens=False).input_ids[0]


def test_bad_inputs(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="class 1"):
        class_targets(model, tok, [Example("only negatives", 0)], TEMPLATE)
    with pytest.raises(ValueError, match="center 'mean'"):
        class_targets(model, tok, EXAMPLES, TEMPLATE, center="mean")
    with pytest.raises(ValueError, match="no texts"):
        hidden_and_logits(model, tok, [], TEMPLATE)
    with pytest.raises(ValueError, match="n ≥ 1"):
        Target(R=torch.zeros(0, 5), H=torch.zeros(0, 3), label_id=0, has_bias=False)


def test_label_word_target_is_the_gradient_of_fine_tunings_loss(tiny_untied):
    """match_softmax: label_words: a class target is the head gradient of fine-tuning's own loss (softmax over the
    label words only, gradmm.methods.finetune), zero outside the label words' rows; synthetic rows use the same."""
    from gradmm.methods.finetune import classification_loss

    model, tok = tiny_untied
    words = first_label_ids(tok, TEMPLATE)
    target = class_targets(model, tok, EXAMPLES, TEMPLATE, label_words_only=True)[1]
    assert target.label_words == tuple(words)
    ref = copy.deepcopy(model).double()
    head = ref.get_output_embeddings()
    head.requires_grad_(True)
    classification_loss(ref, tok, [ex for ex in EXAMPLES if ex.label == 1], TEMPLATE, words).backward()
    G_W, G_b = target.dense()
    assert _rel(G_W, head.weight.grad) < 1e-5 and _rel(G_b, head.bias.grad) < 1e-5
    others = torch.ones(G_W.shape[0], dtype=torch.bool)
    others[words] = False
    assert G_W[others].abs().max() == 0 and G_W[words].abs().min() > 0
    logits = torch.randn(3, G_W.shape[0], dtype=torch.float64, requires_grad=True)
    r = residuals(logits, words[0], tuple(words))  # = ∂ CE(logits[:, words], 0) / ∂ logits, per row
    F.cross_entropy(logits[:, words], torch.zeros(3, dtype=torch.long), reduction="sum").backward()
    assert torch.allclose(r, logits.grad)
    texts = [ex.text for ex in EXAMPLES if ex.label == 1]
    assert abs(cosine_distance_to_target(model, tok, texts, TEMPLATE, target).item()) < 1e-9  # its own set
    with pytest.raises(ValueError, match="not all among the label words"):
        residuals(logits.detach(), words[0] + 1 if words[0] + 1 not in words else words[0] + 2, tuple(words))
