import math
import warnings

import pytest
import torch

from gradmm.core.data import TEMPLATES, Example
from gradmm.core.dp import (
    analytic_sigma,
    classical_sigma,
    clip_target,
    gaussian_delta,
    noise_generator,
    noisy_target,
    official_sigma,
    per_example_norms,
    sensitivity,
)
from gradmm.core.matching import class_targets, explicit_head_grad, match_loss

TEMPLATE = TEMPLATES["paper"]
TEXTS = ["ok", "a wonderful, moving film", "terrible acting and an awful plot that goes on and on",
         "i loved it", "a dull, boring mess of a movie", "great", "fine, i guess", "what a waste of two hours"]
EXAMPLES = [Example(t, i % 2) for i, t in enumerate(TEXTS)]


def exact_delta(sigma, eps, sens):
    """Balle & Wang 2018, Thm 8: the δ achieved by N(0, σ²) noise on a query of L2 sensitivity Δ.

    Φ from torch.special (independent of gradmm.core.dp's math.erfc); the e^ε Φ(·) term in log space because
    at large ε it is a far-left-tail value times a huge factor (statistics.NormalDist loses it to rounding).
    """
    a, b = sens / (2 * sigma), eps * sigma / sens
    t = lambda x: torch.tensor(x, dtype=torch.float64)
    return torch.special.ndtr(t(a - b)).item() - math.exp(eps + torch.special.log_ndtr(t(-a - b)).item())


@pytest.fixture(scope="module", params=["tied", "untied"])
def target(request, tiny, tiny_untied):
    model, tok = tiny if request.param == "tied" else tiny_untied
    return class_targets(model, tok, EXAMPLES, TEMPLATE)[1]


def test_classical_sigma_known_value():
    assert classical_sigma(0.5, 1e-5, 1.0) == pytest.approx(2 * 4.844805262605389, rel=1e-12)
    with pytest.warns(UserWarning, match="epsilon < 1"):  # outside the classical theorem's range
        assert classical_sigma(1.0, 1e-5, 1.0) == pytest.approx(4.8448, abs=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classical_sigma(0.99, 1e-5, 1.0)  # no warning inside the range


def test_analytic_sigma_solves_the_exact_condition():
    sigma = analytic_sigma(1.0, 1e-5, 1.0)
    assert sigma == pytest.approx(3.73, abs=0.005)
    assert exact_delta(sigma, 1.0, 1.0) == pytest.approx(1e-5, rel=1e-6)
    assert exact_delta(sigma, 1.0, 1.0) <= 1e-5 < exact_delta(sigma * (1 - 1e-6), 1.0, 1.0)  # smallest such σ
    assert gaussian_delta(sigma, 1.0, 1.0) == pytest.approx(exact_delta(sigma, 1.0, 1.0), rel=1e-9)
    for eps, delta, sens in [(0.05, 1e-4, 1.0), (0.3, 1e-6, 0.02), (4.0, 1e-3, 5.0), (50.0, 1e-5, 1.0)]:
        s = analytic_sigma(eps, delta, sens)
        assert exact_delta(s, eps, sens) == pytest.approx(delta, rel=1e-5)


def test_analytic_below_classical_and_linear_in_sensitivity():
    for eps in (0.01, 0.05, 0.2, 0.5, 0.9):
        a, c = analytic_sigma(eps, 1e-5, 1.0), classical_sigma(eps, 1e-5, 1.0)
        assert a < c
        assert exact_delta(c, eps, 1.0) <= 1e-5  # the classical σ is valid (if loose) for ε < 1
    assert analytic_sigma(0.3, 1e-4, 0.04) == pytest.approx(0.04 * analytic_sigma(0.3, 1e-4, 1.0), rel=1e-9)


def test_large_epsilon_calibrations():
    with pytest.warns(UserWarning):
        classical = classical_sigma(10.0, 1e-5, 1.0)
    assert exact_delta(classical, 10.0, 1.0) > 1e-5  # why the warning: classical under-noises at ε = 10
    for eps in (2.0, 5.0, 10.0, 50.0):  # the official code's ε > 1 branch is valid, and ≥ the exact σ
        assert exact_delta(official_sigma(eps, 1e-5, 1.0), eps, 1.0) <= 1e-5
        assert official_sigma(eps, 1e-5, 1.0) >= analytic_sigma(eps, 1e-5, 1.0)
    assert official_sigma(0.05, 1e-4, 1.0) == pytest.approx(86.87, abs=0.01)  # the authors' calibration: σ·n ≈ 86.9


def test_sensitivity_relations():
    assert sensitivity(1.0, 25) == pytest.approx(0.04)
    assert sensitivity(1.0, 25, "replace_one") == pytest.approx(0.08)


@pytest.mark.parametrize("call, match", [
    (lambda: classical_sigma(0, 1e-5, 1), "epsilon must be a finite number > 0, got 0"),
    (lambda: analytic_sigma(-1.0, 1e-5, 1), "epsilon .* got -1.0"),
    (lambda: analytic_sigma(float("inf"), 1e-5, 1), "epsilon .* got inf"),
    (lambda: analytic_sigma(1, 0, 1), r"delta must lie in the open interval \(0, 1\), got 0"),
    (lambda: classical_sigma(1, 1.0, 1), r"delta .* got 1.0"),
    (lambda: official_sigma(1, -1e-5, 1), r"delta .* got -1e-05"),
    (lambda: analytic_sigma(1, 1e-5, 0), "sensitivity must be a finite number > 0, got 0"),
    (lambda: sensitivity(0.0, 10), "clip norm C must be a finite number > 0, got 0.0"),
    (lambda: sensitivity(-1, 10), "clip norm C .* got -1"),
    (lambda: sensitivity(1, 0), "n .* must be ≥ 1, got 0"),
    (lambda: sensitivity(1, 10, "add_remove"), "relation 'add_remove'"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_inputs_to_noisy_target(target):
    with pytest.raises(ValueError, match="clip norm C .* got 0"):
        noisy_target(target, 1.0, 1e-5, clip_norm=0)
    with pytest.raises(ValueError, match="epsilon"):
        noisy_target(target, 0.0, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        noisy_target(target, 1.0, 2.0)
    with pytest.raises(ValueError, match="mechanism 'laplace'"):
        noisy_target(target, 1.0, 1e-5, mechanism="laplace")
    with pytest.raises(ValueError, match="before adding noise"):
        clip_target(noisy_target(target, 1.0, 1e-5)[0], 1.0)


def test_clipping_bounds_every_per_example_gradient(target):
    dense = []
    for j in range(target.n):  # explicit per-example (W, b) gradient norms
        g_W = target.R[j][:, None] * target.H[j][None, :]
        sq = g_W.square().sum() + (target.R[j].square().sum() if target.has_bias else 0)
        dense.append(sq.sqrt())
    norms = per_example_norms(target)
    assert torch.allclose(norms, torch.stack(dense), rtol=1e-10)
    C = (norms.min().item() + norms.max().item()) / 2  # some examples above C, some below
    clipped = clip_target(target, C)
    after = per_example_norms(clipped)
    assert (after <= C * (1 + 1e-12)).all()
    assert (norms > C).any() and (norms < C).any()
    below = norms <= C
    assert torch.allclose(after[below], norms[below])
    assert torch.allclose(after[~below], torch.full_like(after[~below], C))
    assert torch.allclose(per_example_norms(clip_target(clipped, C)), after)  # idempotent
    # The clipped target is the mean of the clipped per-example gradients.
    G_W, _ = clipped.dense()
    manual = sum(w * target.R[j][:, None] * target.H[j][None, :] for j, w in enumerate(clipped.weight)) / target.n
    assert torch.allclose(G_W, manual, rtol=1e-10, atol=1e-14)


def test_noisy_target_noise_snr_and_loss(target):
    C, eps, delta = 1.0, 1.0, 1e-5
    noisy, snr = noisy_target(target, eps, delta, clip_norm=C, generator=noise_generator(3))
    assert noisy.sigma == pytest.approx(analytic_sigma(eps, delta, C / target.n))
    V, d = target.R.shape[1], target.H.shape[1]
    numel = V * d + (V if target.has_bias else 0)
    noise = [noisy.noise_W.flatten()] + ([noisy.noise_b] if target.has_bias else [])
    noise = torch.cat(noise).double()
    assert noise.std().item() == pytest.approx(noisy.sigma, rel=0.01)
    # The dense noisy target is the clipped clean target plus the stored noise, drawn once and seeded.
    clean = clip_target(target, C)
    G_clean, G_noisy = clean.dense(), noisy.dense()
    assert torch.allclose(G_noisy[0], G_clean[0] + noisy.noise_W.double())
    clean_norm = (G_clean[0].square().sum() + (G_clean[1].square().sum() if target.has_bias else 0)).sqrt()
    assert snr == pytest.approx((clean_norm / noise.norm()).item(), rel=1e-9)
    assert snr == pytest.approx((clean_norm / (noisy.sigma * math.sqrt(numel))).item(), rel=0.01)
    assert G_noisy[0].norm().item() ** 2 == pytest.approx(noisy.sq_norm_W, rel=1e-9)
    again, _ = noisy_target(target, eps, delta, clip_norm=C, generator=noise_generator(3))
    other, _ = noisy_target(target, eps, delta, clip_norm=C, generator=noise_generator(4))
    assert torch.equal(again.noise_W, noisy.noise_W) and not torch.equal(other.noise_W, noisy.noise_W)
    # The factored match loss against the noisy target equals the dense cosine distance.
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, d, generator=gen, dtype=torch.float64)
    logits = torch.randn(3, V, generator=gen, dtype=torch.float64)
    g = explicit_head_grad(h, logits, target.label_id, bias=target.has_bias)
    cos = [torch.nn.functional.cosine_similarity(g[0].flatten(), G_noisy[0].flatten(), dim=0)]
    if target.has_bias:
        cos.append(torch.nn.functional.cosine_similarity(g[1], G_noisy[1], dim=0))
    expected = sum(1 - c for c in cos) / len(cos)
    assert match_loss(h, logits, target.label_id, noisy).item() == pytest.approx(expected.item(), rel=1e-8)


def test_snr_decreases_with_epsilon(target):
    snrs = [noisy_target(target, eps, 1e-5, generator=noise_generator(0))[1] for eps in (10.0, 1.0, 0.1, 0.01)]
    assert all(a > b for a, b in zip(snrs, snrs[1:]))
    replace = noisy_target(target, 1.0, 1e-5, relation="replace_one", generator=noise_generator(0))[1]
    assert replace == pytest.approx(snrs[1] / 2, rel=1e-6)  # twice the sensitivity, twice the noise
