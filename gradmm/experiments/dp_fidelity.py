"""Does a DP class target still steer the X-step? Label-row SNR and the X-gradient's cosine, noisy vs clean.

The whole-matrix SNR ‖S‖/‖N‖ that `dp.noisy_target` returns spreads the noise over all V×d coordinates of
the head gradient. The X-step does not read them all alike: f's W-part is the cosine of the batch gradient
mean_i r_i h_iᵀ with the target, and r = p − e_y has one large entry, −(1 − p_y), at the label row y. So
what moves X is mostly the target's row y (and bias entry y), where the clean signal is concentrated and the
noise is only d of the V·d coordinates. Two numbers say whether the X-step still follows the target:

* label-row SNR: ‖(S_W[y], S_b[y])‖ / ‖(N_W[y], N_b[y])‖ for the clean clipped target S and the noise N;
* X-step cosine: cos(∂f/∂X under S + N, ∂f/∂X under S) at the same X, on the free (non-template) positions,
  i.e. the direction the X-step would take before clipping and the ADMM penalty.

`measure` runs both on a real model over noise draws, ε values and starting batches; scripts/dp_fidelity.py
writes the table.
"""

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gradmm.core.admm import Layout, Problem, initialise
from gradmm.core.dp import MECHANISMS, RELATIONS, clip_target, noisy_target
from gradmm.core.matching import GRAM_DTYPE, Target, class_targets, head_logits, match_loss
from gradmm.core.models import last_hidden
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import prompt_ids
from gradmm.methods.generate import decoding_prefix_ids, sequence_length


def label_row_snr(noisy: Target) -> float:
    """‖clean row y of (G_W, G_b)‖ / ‖noise row y‖: the SNR of the part of the target the X-step reads most."""
    if noisy.noise_W is None:
        raise ValueError("label_row_snr needs a noised target (dp.noisy_target); this one has no noise")
    y = noisy.label_id
    if y < 0:
        raise ValueError("label_row_snr needs a class target with one label token, not a joint target")
    w = noisy.weight / noisy.n
    signal_sq = ((w * noisy.R[:, y]) @ noisy.H).square().sum()
    noise_sq = noisy.noise_W[y].to(GRAM_DTYPE).square().sum()
    if noisy.has_bias:
        signal_sq = signal_sq + (w @ noisy.R[:, y]).square()
        noise_sq = noise_sq + noisy.noise_b[y].to(GRAM_DTYPE).square()
    return math.sqrt(signal_sq.item()) / math.sqrt(noise_sq.item())


class XStepGradient:
    """∂f/∂X at one X for any target: `admm.Problem.f`'s loss, masked to the free positions as the X-step masks
    it (free_mask (L, 1): 1 on free positions; None = every position). The forward through the model is run
    once and kept, so each further target costs one backward."""

    def __init__(self, model, X: torch.Tensor, y: int, free_mask: torch.Tensor | None = None):
        self.X = X.detach().requires_grad_(True)
        self.h = last_hidden(model, inputs_embeds=self.X)
        self.logits = head_logits(model, self.h)
        self.y, self.free_mask = y, free_mask

    def __call__(self, target: Target) -> torch.Tensor:
        f = match_loss(self.h, self.logits, self.y, target)
        g = torch.autograd.grad(f, self.X, retain_graph=True)[0]
        return g if self.free_mask is None else g * self.free_mask


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def draw_noisy_target(target: Target, epsilon: float, delta: float, clip_norm: float, mechanism: str,
                      relation: str, seed: int) -> tuple[Target, float]:
    """`dp.noisy_target` from a seeded noise stream (a measurement, not a private run): (target, whole SNR)."""
    return noisy_target(target, epsilon, delta, clip_norm, mechanism, relation,
                        generator=torch.Generator().manual_seed(seed))


def check_settings(epsilons: Sequence[float], draws: int, mechanism: str, relation: str, delta: float = 1e-4,
                   clip_norm: float = 1.0) -> None:
    """Clear errors before any model work."""
    if not (isinstance(delta, float) and 0 < delta < 1):
        raise ValueError(f"delta must be a number in the open interval (0, 1), got {delta!r}")
    if not (isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip norm C must be a finite number > 0, got {clip_norm!r}")
    if not epsilons:
        raise ValueError("no epsilons given: list at least one ε > 0")
    for eps in epsilons:
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"every epsilon must be a finite number > 0, got {eps!r}")
    if not (isinstance(draws, int) and draws >= 1):
        raise ValueError(f"draws (noise draws per ε) must be an integer ≥ 1, got {draws!r}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism {mechanism!r}: use one of {sorted(MECHANISMS)}")
    if relation not in RELATIONS:
        raise ValueError(f"relation {relation!r}: use one of {sorted(RELATIONS)}")


def fidelity(model, batches: Sequence[torch.Tensor], target: Target, epsilons: Sequence[float], delta: float,
             clip_norm: float, mechanism: str = "analytic", relation: str = "zero_out", draws: int = 5,
             seed: int = 0, free_mask: torch.Tensor | None = None) -> list[dict]:
    """One row per ε: σ, the whole-matrix and label-row SNR (means over draws) and the X-step cosine.

    target: a class's clean (unclipped, noise-free) target; batches: starting points X (B, L, d). Each of
    `draws` noise draws is compared with the clipped clean target at every batch; cos_mean/min/max run over
    draws × batches. clip_cos: the cosine of the X-gradient under the clipped vs the unclipped clean target
    (what clipping alone changes; the same for every ε).
    """
    check_settings(epsilons, draws, mechanism, relation, delta, clip_norm)
    if not batches:
        raise ValueError("no batches X given to take the X-gradient at")
    y = target.label_id
    clipped = clip_target(target, clip_norm)  # what the noise is added to; the same for every ε
    grads = [XStepGradient(model, X, y, free_mask) for X in batches]
    reference = [grad(clipped) for grad in grads]
    clip_cos = [_cosine(g_ref, grad(target)) for grad, g_ref in zip(grads, reference)]
    rows = []
    for e, eps in enumerate(epsilons):
        cos, whole, row = [], [], []
        for k in range(draws):
            noisy, snr = draw_noisy_target(target, eps, delta, clip_norm, mechanism, relation, seed=seed + 1_000 * e + k)
            whole.append(snr)
            row.append(label_row_snr(noisy))
            cos += [_cosine(grad(noisy), g_ref) for grad, g_ref in zip(grads, reference)]
            sigma = noisy.sigma
            del noisy  # V×d noise: one draw in memory at a time
        rows.append({"epsilon": eps, "sigma": sigma, "draws": draws, "batches": len(batches),
                     "whole_snr": sum(whole) / draws, "label_row_snr": sum(row) / draws,
                     "cos_mean": sum(cos) / len(cos), "cos_min": min(cos), "cos_max": max(cos),
                     "clip_cos": sum(clip_cos) / len(clip_cos)})
    return rows


def measure(model, tokenizer, task, gen, dp, epsilons: Sequence[float], draws: int = 5, batches_per_kind: int = 2,
            kinds: Sequence[str] = ("random", "lm"), seed: int = 0, progress: bool = False) -> list[dict]:
    """`fidelity` for every class of a task, at starting batches X of each kind, as a DP run would see them.

    gen: the generate settings (batch size, max_seq_len as a DP run's length, init settings, decoding prefix);
    dp: δ, C, mechanism and relation (its ε and noise seed are replaced by `epsilons` and the draws').
    kinds: "random" = GRADMM's initial batch (best of gen.init_candidates random batches by f against the
    clipped clean target); "lm" = embeddings of LM samples under the class instruction, in the template.
    """
    check_settings(epsilons, draws, dp.mechanism, dp.relation, dp.delta, dp.clip_norm)
    for kind in kinds:
        if kind not in ("random", "lm"):
            raise ValueError(f"batch kind {kind!r}: use 'random' (GRADMM's initial batch) or 'lm' (LM samples)")
    if batches_per_kind < 1:
        raise ValueError(f"batches_per_kind must be ≥ 1, got {batches_per_kind}")
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0])
    prefix_ids = prompt_ids(tokenizer, task.template.prefix)
    suffix_ids = tokenizer(task.template.suffix, add_special_tokens=False).input_ids
    dp_run = dataclasses.replace(dp, enabled=True)  # a DP run's sequence length: the public cap
    targets = class_targets(model, tokenizer, task.pool, task.template)
    out = []
    for c, target in enumerate(targets):
        layout = Layout(prefix_ids, suffix_ids, sequence_length(tokenizer, task, c, gen, dp_run))
        layout.check()
        clipped = clip_target(target, dp.clip_norm)
        for kind in kinds:
            problem = Problem(model, clipped, layout, decoding_prefix_ids(tokenizer, task, c, gen), allowed,
                              dataclasses.replace(gen, init=kind))
            generator = torch.Generator().manual_seed(seed * 1_009 + c)
            if kind == "random":
                batches = [initialise(problem, gen.batch_size, generator)[0] for _ in range(batches_per_kind)]
            else:  # one LM sample batch per seed; no scoring (the LM-init variant's candidates are these)
                batches = [problem.freeze(problem.emb[problem.sample_ids(gen.batch_size, seed * 1_009 + c * 101 + b)])
                           for b in range(batches_per_kind)]
            rows = fidelity(model, batches, target, epsilons, dp.delta, dp.clip_norm, dp.mechanism, dp.relation,
                            draws, seed=seed * 1_000_003 + c * 10_007, free_mask=1 - problem.fixed_mask)
            out += [{"dataset": task.name, "class": task.class_names[c], "x": kind, **r} for r in rows]
            if progress:
                print(f"{task.name} {task.class_names[c]} {kind}: "
                      + ", ".join(f"ε={r['epsilon']:g} cos={r['cos_mean']:.3f}" for r in rows), flush=True)
    return out


COLUMNS = ["dataset", "class", "x", "epsilon", "sigma", "draws", "batches", "whole_snr", "label_row_snr",
           "cos_mean", "cos_min", "cos_max", "clip_cos"]


