"""Differentially-private class targets: clip each real example's head gradient, add Gaussian noise once.

Mechanism (as the authors'): every real example's matched gradient (W and b flattened together) is scaled to total
norm ≤ C, the class average is taken, and N(0, σ² I) is added once to every coordinate of every matched
tensor. Everything downstream (generation *and* the filter's per-sample score) must use the noisy target;
by post-processing the synthetic text is then (ε, δ)-DP w.r.t. that class's real examples, and classes are
disjoint (parallel composition).

Neighbouring relation. We use "zero-out" neighbours (Ponomareva et al. 2023, "How to DP-fy ML", sec. 5.1):
datasets differ in one example being replaced by a null example that contributes a zero gradient, and n is
public. The average of n clipped gradients then moves by at most C/n, which is the sensitivity the official
code uses. Under the stricter replace-one relation (one example swapped for an arbitrary other) the same
average moves by up to 2C/n: pass relation="replace_one" to calibrate for that. (Add/remove of an example
with n treated as public is what the official code claims; strictly it changes n, so 2C/n is the safe bound.)

Not covered by the noise: the class sizes n, a data-derived centre (matching.class_targets center="pool"),
the synthetic length taken from real lengths, and hyper-parameter selection on real data (the authors'
pipeline leaves them out too).
"""

import dataclasses
import math
import secrets
import warnings

import torch

from gradmm.core.matching import GRAM_DTYPE, Target

RELATIONS = {"zero_out": 1.0, "replace_one": 2.0}  # sensitivity of the clipped mean, in units of C/n


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # rejected by the range checks below, which name the value


def _check(epsilon: float, delta: float) -> None:
    if not (math.isfinite(_number(epsilon)) and _number(epsilon) > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if not 0 < _number(delta) < 1:
        raise ValueError(f"delta must lie in the open interval (0, 1), got {delta!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(_number(value)) and _number(value) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _phi(x: float) -> float:
    """Standard normal CDF via erfc: accurate in the far left tail, where the DP condition lives."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """The smallest δ for which N(0, σ²) noise on a query of L2 sensitivity Δ is (ε, δ)-DP.

    Balle & Wang 2018, Theorem 8 (exact, decreasing in σ):
        δ(σ) = Φ(Δ/(2σ) − εσ/Δ) − e^ε Φ(−Δ/(2σ) − εσ/Δ)
    """
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    tail = _phi(-a - b)
    # e^ε Φ(−a − b) in log space: e^ε alone overflows a float for ε > 709.
    return _phi(a - b) - (math.exp(min(epsilon + math.log(tail), 700.0)) if tail > 0 else 0.0)


def classical_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """σ = Δ sqrt(2 ln(1.25/δ)) / ε (Dwork & Roth 2014, Thm A.1), the official code's choice for ε ≤ 1.

    The theorem covers ε < 1 only. For ε ≥ 1 the value is still returned (the official code uses it at
    ε = 1) with a warning: it may or may not be enough there; analytic_sigma is exact for every ε.
    """
    _check(epsilon, delta)
    _check_positive("sensitivity", sensitivity)
    if epsilon >= 1:
        warnings.warn(f"classical_sigma: the classical Gaussian mechanism is proven for epsilon < 1 only "
                      f"(got {epsilon}); use analytic_sigma", stacklevel=2)
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def analytic_sigma(epsilon: float, delta: float, sensitivity: float, rel_tol: float = 1e-12) -> float:
    """The smallest σ with gaussian_delta(σ) ≤ δ (Balle & Wang 2018 analytic Gaussian mechanism).

    Bisection on the exact condition; returns the upper end of the final bracket, so the result always
    satisfies the condition (never under-noises by rounding). Valid for every ε > 0, and never larger than
    the classical σ.
    """
    _check(epsilon, delta)
    _check_positive("sensitivity", sensitivity)
    lo, hi = sensitivity * 1e-3, sensitivity
    while gaussian_delta(hi, epsilon, sensitivity) > delta:  # δ(σ) → 0 as σ → ∞: a bracket exists
        lo, hi = hi, 2 * hi
    while gaussian_delta(lo, epsilon, sensitivity) <= delta:  # tiny σ suffices only for huge ε
        lo /= 2
        if lo < 1e-300:
            return hi
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        if gaussian_delta(mid, epsilon, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def official_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The released code's calibration (generate.py:1012-1041): classical for ε ≤ 1, else Zhao et al. 2019.

    For ε > 1: c = sqrt(ln(2 / (sqrt(16δ + 1) − 1))), σ = (c + sqrt(c² + ε)) Δ / (ε √2).
    """
    _check(epsilon, delta)
    _check_positive("sensitivity", sensitivity)
    if epsilon <= 1:
        return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon  # classical, no warning at ε = 1
    c = math.sqrt(math.log(2 / (math.sqrt(16 * delta + 1) - 1)))
    return (c + math.sqrt(c * c + epsilon)) * sensitivity / (epsilon * math.sqrt(2))


MECHANISMS = {"analytic": analytic_sigma, "classical": classical_sigma, "official": official_sigma}


def sensitivity(clip_norm: float, n: int, relation: str = "zero_out") -> float:
    """L2 sensitivity of the mean of n gradients clipped to norm C: C/n (zero-out) or 2C/n (replace-one)."""
    _check_positive("clip norm C", clip_norm)
    if relation not in RELATIONS:
        raise ValueError(f"relation {relation!r}: use one of {sorted(RELATIONS)}")
    if n < 1:
        raise ValueError(f"n (number of real examples) must be ≥ 1, got {n}")
    return RELATIONS[relation] * clip_norm / n


def per_example_norms(target: Target) -> torch.Tensor:
    """(n,) norm of each weighted per-example gradient (w_j r_j h_jᵀ, w_j r_j); ‖r hᵀ‖² = ‖r‖² ‖h‖²."""
    rr = target.R.square().sum(-1)
    sq = rr * (target.H.square().sum(-1) + (1.0 if target.has_bias else 0.0))
    return target.weight.abs() * sq.sqrt()


def clip_target(target: Target, clip_norm: float) -> Target:
    """The target with every per-example gradient scaled by min(1, C/‖g_j‖) (idempotent)."""
    _check_positive("clip norm C", clip_norm)
    if target.noise_W is not None:
        raise ValueError("clip a target before adding noise, not after")
    factor = (clip_norm / per_example_norms(target).clamp_min(1e-300)).clamp(max=1.0)
    return dataclasses.replace(target, weight=target.weight * factor)


def noise_generator(seed: int | None = None) -> torch.Generator:
    """The CPU generator the DP noise is drawn from: seeded from OS entropy (`secrets`), never stored, unless a
    seed is given, which makes the noise reproducible and so not private (tests only)."""
    return torch.Generator().manual_seed(secrets.randbits(64) if seed is None else seed)


def noisy_target(target: Target, epsilon: float, delta: float, clip_norm: float = 1.0,
                 mechanism: str = "analytic", relation: str = "zero_out",
                 generator: torch.Generator | None = None) -> tuple[Target, float]:
    """(clipped target + N(0, σ² I) on W and b, SNR = ‖clean clipped target‖ / ‖noise‖).

    σ = MECHANISMS[mechanism](ε, δ, sensitivity(C, n, relation)). The noise is drawn once, on the CPU from
    `generator` (default: a fresh one seeded from OS entropy, see `noise_generator`), in float32, then moved
    to the target's device. The SNR is the number to report (how much signal survives): with SmolLM2 (V·d ≈ 2.8e7)
    and the paper's ε = 0.05, n = 50, C = 1 it is of order 1e-4: the target is essentially pure noise.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism {mechanism!r}: use one of {sorted(MECHANISMS)}")
    _check(epsilon, delta)
    clipped = clip_target(target, clip_norm)
    sigma = MECHANISMS[mechanism](epsilon, delta, sensitivity(clip_norm, clipped.n, relation))
    gen = noise_generator() if generator is None else generator
    V, d = clipped.R.shape[1], clipped.H.shape[1]
    noise_W = (sigma * torch.randn(V, d, generator=gen)).to(clipped.R.device)
    noise_b = (sigma * torch.randn(V, generator=gen)).to(clipped.R.device) if clipped.has_bias else None
    noisy = dataclasses.replace(clipped, noise_W=noise_W, noise_b=noise_b, sigma=sigma)
    noise_sq = noise_W.to(GRAM_DTYPE).square().sum()
    if noise_b is not None:
        noise_sq = noise_sq + noise_b.to(GRAM_DTYPE).square().sum()
    return noisy, math.sqrt(clipped.sq_norm_clean) / math.sqrt(noise_sq.item())
