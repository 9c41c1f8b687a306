"""Exact token swaps: lower the matching loss of a token batch one swap at a time, among tokens the LM finds fluent.

A discrete step that keeps the match, where the ADMM projection ("nearest k, then most probable") throws the
gradient away (f(Z) stays near f of unmatched text while f(X) falls). In the spirit of GCG (Zou et al. 2023) and
AutoPrompt (Shin et al. 2020), with a fluency restriction as in FluentPrompt / COLD decoding:

    for each step:
      g = ∂f/∂e at the current tokens (the set-level matching loss, one backward)
      candidates at free position (i, j): the LM's top-`next_topk` next tokens after row i's decoding prefix
        and tokens :j (allowed word tokens only), so a swap stays a likely continuation
      rank every candidate swap z_ij -> v by the first-order change (e_v − e_z)·g_ij, keep the `candidates` best
      evaluate those swaps exactly (one batched forward of the changed rows; the other rows' hidden states reused)
      apply the best if it lowers f; stop when none does

Every step lowers f(Z) exactly (it is evaluated, not predicted), so the match of the final tokens is what the
filter and the fine-tuning see.
"""

import torch
from tqdm.auto import tqdm

from gradmm.core.matching import head_logits, match_loss
from gradmm.core.models import last_hidden


def next_token_candidates(model, ids: torch.Tensor, decoding_prefix: list[int], free: slice, allowed: torch.Tensor,
                          topk: int) -> torch.Tensor:
    """(B, F, topk) the LM's most probable allowed tokens at each free position, given the prefix and the row's
    tokens before it (one forward of the batch)."""
    B = ids.shape[0]
    ctx = torch.tensor(decoding_prefix, dtype=torch.long, device=ids.device)[None].expand(B, -1)
    seq = torch.cat([ctx, ids], 1)
    P = ctx.shape[1]
    logits = model(input_ids=seq, use_cache=False).logits.float()  # logits[:, t] predicts seq[:, t + 1]
    at = logits[:, P + free.start - 1:P + free.stop - 1]  # predictions of the free positions
    mask = allowed.to(at.device)[: at.shape[-1]]
    at = at.masked_fill(~mask, float("-inf"))
    return at.topk(topk, dim=-1).indices


def _batch_loss(h: torch.Tensor, logits: torch.Tensor, y, target) -> torch.Tensor:
    return match_loss(h, logits, y, target).float()


def swap_step(problem, ids: torch.Tensor, next_topk: int, n_candidates: int) -> tuple[torch.Tensor, float, float]:
    """One exact swap step on a (B, L) token batch: (new ids, f before, f after). f after == f before: no swap
    lowered it (ids unchanged)."""
    model, emb, free, y, target = problem.model, problem.emb, problem.layout.free, problem.y, problem.target
    E = emb[ids].detach().requires_grad_(True)
    h = last_hidden(model, inputs_embeds=E)
    logits = head_logits(model, h)
    f = _batch_loss(h, logits, y, target)
    (g,) = torch.autograd.grad(f, E)
    with torch.no_grad():
        cand = next_token_candidates(model, ids, problem.decoding_prefix, free, problem.allowed, next_topk)  # (B,F,K)
        cur = ids[:, free]  # (B, F)
        g_free = g[:, free].float()  # (B, F, d)
        # first-order change of f: (e_v − e_z) · g
        delta = torch.einsum("bfkd,bfd->bfk", emb[cand].float(), g_free) - (emb[cur].float() * g_free).sum(-1, keepdim=True)
        delta = delta.masked_fill(cand == cur[..., None], float("inf"))  # not a swap
        B, F, K = cand.shape
        order = delta.flatten().argsort()[:n_candidates]
        b, rest = order // (F * K), order % (F * K)
        j, k = rest // K, rest % K
        trial = ids[b].clone()
        trial[torch.arange(len(b), device=ids.device), free.start + j] = cand[b, j, k]
        h_trial = last_hidden(model, input_ids=trial)
        l_trial = head_logits(model, h_trial)
        h0, l0 = h.detach(), logits.detach()
        losses = []
        for c in range(len(b)):  # the batch with row b[c] replaced
            hc, lc = h0.clone(), l0.clone()
            hc[b[c]], lc[b[c]] = h_trial[c], l_trial[c]
            losses.append(_batch_loss(hc, lc, y, target))
        losses = torch.stack(losses)
        best = int(losses.argmin())
        f0 = f.item()
        if losses[best].item() >= f0:
            return ids, f0, f0
        out = ids.clone()
        out[b[best]] = trial[best]
        return out, f0, losses[best].item()


def refine_by_swaps(problem, ids: torch.Tensor, steps: int, next_topk: int, n_candidates: int,
                    progress: bool = False) -> tuple[torch.Tensor, list[dict]]:
    """Up to `steps` exact swap steps (see the module docstring); stops early when no swap lowers f.
    Returns the ids and one record per step (f before and after, the swap count so far)."""
    history = []
    bar = tqdm(range(steps), desc="swaps", leave=False, disable=not progress)
    for s in bar:
        ids, f0, f1 = swap_step(problem, ids, next_topk, n_candidates)
        history.append({"swap_step": s, "f_before": f0, "f_after": f1})
        bar.set_postfix(f=round(f1, 4))
        if f1 >= f0:
            break
    return ids, history
