"""ADMM over input embeddings: continuous X matches the gradient, discrete Z are real tokens (the authors' way).

    Z ← Proj(X + Λ/ρ)                                    top-k nearest tokens, the LM's favourite (projection.py)
    X ← X − Adam(∇ [w·f(X) + ρ/2 ‖X − Z + Λ/ρ‖²])       inner steps, prompt positions frozen, gradient clipped
    Λ ← Λ + ρ (X − Z)                                    dual ascent

One call of `run_batches` writes several batches of B synthetic sequences of one class, stepped together: one
forward/backward and one decoding pass over all their rows, while each batch keeps its own X, Adam, Λ, ρ and
stopping (`parallel_batches`; one batch is the paper's loop). Each batch's state is checkpointed after every
outer iteration and a restarted call continues from there: every step is deterministic given the seed, so a
resumed batch ends byte-identical to an uninterrupted one.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gradmm.config import GenerateConfig
from gradmm.core.matching import SubsetMatchLoss, Target, head_logits, match_loss
from gradmm.core.models import input_embeddings, last_hidden
from gradmm.core.perplexity import log_perplexity
from gradmm.core.projection import ORDERS, project_to_tokens
from gradmm.core.swaps import refine_by_swaps
from gradmm.io.tensorfiles import load_tensors, save_tensors

INITS = ("random", "lm")
INIT_SELECTS = ("batch", "rows")
MATCH_SOFTMAXES = ("vocabulary", "label_words")


def check_config(cfg: GenerateConfig, allowed_vocab: int | None = None) -> None:
    """Clear errors before any expensive work."""
    if cfg.rho <= 0 and cfg.projection == "admm":
        raise ValueError(f"generate.rho must be > 0, got {cfg.rho}")
    for key in ("n_per_class", "batch_size", "outer_steps", "inner_steps", "init_candidates", "topk",
                "parallel_batches"):
        if key == "outer_steps" and cfg.outer_steps == 0 and cfg.init == "lm":
            continue  # no ADMM: the LM's own text goes straight to the swaps (or, without swaps, to the filter)
        if getattr(cfg, key) < 1:
            raise ValueError(f"generate.{key} must be ≥ 1, got {getattr(cfg, key)}")
    if cfg.n_per_class % cfg.batch_size:
        raise ValueError(f"generate.n_per_class ({cfg.n_per_class}) must be a multiple of batch_size ({cfg.batch_size})")
    if cfg.order not in ORDERS:
        raise ValueError(f"generate.order {cfg.order!r}: use one of {ORDERS}")
    if cfg.projection not in ("admm", "end_only"):
        raise ValueError(f"generate.projection {cfg.projection!r}: use 'admm' or 'end_only'")
    if cfg.decoding_prefix not in ("instruction", "none"):
        raise ValueError(f"generate.decoding_prefix {cfg.decoding_prefix!r}: use 'instruction' or 'none'")
    if cfg.init not in INITS:
        raise ValueError(f"generate.init {cfg.init!r}: use one of {INITS}")
    if cfg.init_select not in INIT_SELECTS:
        raise ValueError(f"generate.init_select {cfg.init_select!r}: use one of {INIT_SELECTS}")
    if cfg.init_select == "rows" and (cfg.init != "lm" or cfg.joint):
        raise ValueError("generate.init_select 'rows' chooses among one class's LM samples: it needs "
                         "generate.init 'lm' and joint false")
    if cfg.match_softmax not in MATCH_SOFTMAXES:
        raise ValueError(f"generate.match_softmax {cfg.match_softmax!r}: use one of {MATCH_SOFTMAXES}")
    if cfg.init_shots < 0 or (cfg.init_shots and (cfg.init != "lm" or cfg.joint)):
        raise ValueError(f"generate.init_shots={cfg.init_shots}: real demonstrations in the LM's instruction need "
                         "generate.init 'lm' and joint false, and a count ≥ 0")
    if not 0 < cfg.init_top_p <= 1:
        raise ValueError(f"generate.init_top_p must be in (0, 1], got {cfg.init_top_p}")
    if cfg.rho_growth < 1.0:
        raise ValueError(f"generate.rho_growth must be ≥ 1 (a shrinking ρ never reaches consensus), got {cfg.rho_growth}")
    if cfg.lr <= 0 or cfg.grad_clip <= 0:
        raise ValueError(f"generate.lr and generate.grad_clip must be > 0, got {cfg.lr}, {cfg.grad_clip}")
    if cfg.parallel_batches > 1 and cfg.joint:
        raise ValueError("generate.parallel_batches > 1 with generate.joint: a joint batch's rows are laid out per "
                         "class, so joint batches are stepped one at a time; use parallel_batches: 1")
    if cfg.swap_steps and cfg.joint:
        raise ValueError("generate.swap_steps with generate.joint: the swaps refine one class's batch; use joint: false")
    if allowed_vocab is not None and max(cfg.topk, cfg.swap_next_topk if cfg.swap_steps else 0) > allowed_vocab:
        raise ValueError(f"generate.topk={cfg.topk} / swap_next_topk={cfg.swap_next_topk} exceeds the allowed "
                         f"vocabulary ({allowed_vocab} word tokens)")


@dataclass
class Layout:
    """Token layout of a synthetic sequence: [template prefix] [free positions] [template suffix]."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    seq_len: int

    @property
    def free(self) -> slice:
        return slice(len(self.prefix_ids), self.seq_len - len(self.suffix_ids))

    def check(self) -> None:
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        if self.seq_len <= fixed:
            raise ValueError(f"sequence length {self.seq_len} leaves no free position after the template's "
                             f"{fixed} fixed tokens: raise generate.seq_len / max_seq_len")


class Problem:
    """Everything fixed during one batch: the model, the class target, the layout and the Z-step settings."""

    def __init__(self, model, target: Target, layout: Layout, decoding_prefix: list[int], allowed: torch.Tensor,
                 cfg: GenerateConfig, sampling_prefixes: list[list[int]] = ()):
        self.model, self.target, self.layout, self.cfg = model, target, layout, cfg
        # init lm with generate.init_shots: few-shot instructions, one picked per candidate batch by its seed
        self.sampling_prefixes = list(sampling_prefixes)
        # The vocabulary as the model feeds it (Gemma's √d scale included): X goes in as inputs_embeds, which
        # bypasses the embedding module, so template, Z and LM-init rows must come from this matrix.
        self.emb = input_embeddings(model)
        self.decoding_prefix, self.allowed = decoding_prefix, allowed
        self.y = target.label_id
        dev = self.emb.device
        self.fixed_mask = torch.ones(layout.seq_len, 1, device=dev)
        self.fixed_mask[layout.free] = 0
        ids = torch.tensor(layout.prefix_ids + [0] * (layout.free.stop - layout.free.start) + layout.suffix_ids,
                           device=dev)
        self.fixed_embeds = self.emb[ids] * self.fixed_mask  # template embeddings, zero on free positions

    def freeze(self, X: torch.Tensor) -> torch.Tensor:
        """X with the template positions set to the template's embeddings."""
        return X * (1 - self.fixed_mask) + self.fixed_embeds

    def f(self, X: torch.Tensor) -> torch.Tensor:
        """The matching loss of a batch of embedding sequences (differentiable w.r.t. X)."""
        h = last_hidden(self.model, inputs_embeds=X)
        return match_loss(h, head_logits(self.model, h), self.y, self.target).float()

    @torch.no_grad()
    def f_ids(self, ids: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
        h = last_hidden(self.model, input_ids=ids)
        return match_loss(h, head_logits(self.model, h), self.y, self.target, per_sample=per_sample).float()

    def f_each(self, n: int, X: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) the matching loss of each of n batches stacked in X (or ids): one forward for all their rows,
        each batch's set matched alone (differentiable w.r.t. X)."""
        h = last_hidden(self.model, inputs_embeds=X) if ids is None else last_hidden(self.model, input_ids=ids)
        logits, B = head_logits(self.model, h), h.shape[0] // n
        return torch.stack([match_loss(h[i * B:(i + 1) * B], logits[i * B:(i + 1) * B], self.y, self.target)
                            for i in range(n)]).float()

    def groups(self, batch_size: int) -> list[tuple[torch.Tensor, list[int]]]:
        """(rows, decoding prefix) pairs: the rows of a batch that are decoded after the same prefix."""
        return [(torch.arange(batch_size), self.decoding_prefix)]

    def log_ppl(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) mean log-perplexity of each row's free tokens after its decoding prefix, as the Z-step reports it."""
        out = torch.empty(ids.shape[0], device=ids.device)
        for rows, prefix in self.groups(ids.shape[0]):
            rows = rows.to(ids.device)
            out[rows] = log_perplexity(self.model, ids[rows], prefix_ids=prefix, start=self.layout.free.start,
                                       end=self.layout.free.stop).to(out.dtype)
        return out

    def project(self, E: torch.Tensor, progress: bool, rho: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.empty(E.shape[:2], dtype=torch.long, device=E.device)
        logppl = torch.empty(E.shape[0], device=E.device)
        for rows, prefix in self.groups(E.shape[0]):
            ids[rows], logppl[rows] = project_to_tokens(
                self.model, E[rows], prefix, self.allowed, self.cfg.topk, self.cfg.order,
                fixed_suffix_ids=self.layout.suffix_ids, fixed_prefix_ids=self.layout.prefix_ids, progress=progress,
                rho=rho, emb=self.emb)
        return ids, logppl

    @torch.no_grad()
    def sample_ids(self, batch_size: int, seed: int) -> torch.Tensor:
        """(B, L) token ids: each row's free positions sampled from the LM after its decoding prefix (with
        generate.init_shots: a few-shot instruction chosen by the seed) and the template's fixed prefix, allowed
        word tokens only, exactly as many as there are free positions."""
        free = self.layout.free
        n_free, dev = free.stop - free.start, self.emb.device
        banned = (~self.allowed).nonzero().squeeze(1).tolist()
        ids = torch.tensor(self.layout.prefix_ids + [0] * n_free + self.layout.suffix_ids, device=dev).repeat(batch_size, 1)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for rows, prefix in self.groups(batch_size):
                if self.sampling_prefixes:
                    prefix = self.sampling_prefixes[seed % len(self.sampling_prefixes)]
                ctx = torch.tensor(prefix + self.layout.prefix_ids, device=dev)[None].expand(len(rows), -1)
                out = self.model.generate(input_ids=ctx, attention_mask=torch.ones_like(ctx), do_sample=True,
                                          temperature=1.0, top_k=0, top_p=self.cfg.init_top_p, min_new_tokens=n_free,
                                          max_new_tokens=n_free, suppress_tokens=banned,
                                          pad_token_id=0)  # never used: every row runs to n_free tokens
                ids[rows.to(dev), free] = out[:, ctx.shape[1]:]
        return ids


class JointProblem(Problem):
    """The joint variant: a batch holds B/C rows of every class, matched together against the gradient of the whole
    labelled pool (the gradient fine-tuning on the pool would take). Row i has its class's label token and is
    decoded after its class's instruction."""

    def __init__(self, model, target: Target, layout: Layout, decoding_prefixes: list[list[int]],
                 label_ids: list[int], allowed: torch.Tensor, cfg: GenerateConfig):
        super().__init__(model, target, layout, [], allowed, cfg)
        C = len(label_ids)
        if cfg.batch_size % C:
            raise ValueError(f"generate.joint needs batch_size ({cfg.batch_size}) divisible by the {C} classes")
        self.row_class = self.row_classes(C, cfg.batch_size)
        self.y = torch.tensor(label_ids, device=self.emb.device)[self.row_class.to(self.emb.device)]
        self.decoding_prefixes = decoding_prefixes

    @staticmethod
    def row_classes(n_classes: int, batch_size: int) -> torch.Tensor:
        """(B,) the class of each row of a joint batch: B/C rows per class, in class order."""
        return torch.arange(n_classes).repeat_interleave(batch_size // n_classes)

    def groups(self, batch_size: int) -> list[tuple[torch.Tensor, list[int]]]:
        if batch_size != len(self.row_class):
            raise ValueError(f"a joint batch has {len(self.row_class)} rows, got {batch_size}")
        return [((self.row_class == c).nonzero().squeeze(1), p) for c, p in enumerate(self.decoding_prefixes)]


def median_embedding_norm(model) -> float:
    """Median norm of the embeddings as fed to the first layer (the scale X is initialised at)."""
    return input_embeddings(model).detach().float().norm(dim=-1).median().item()


@torch.no_grad()
def initialise(problem: Problem, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Best of `init_candidates` batches by f (the authors' init.py keeps the best of 500).

    init="random": N(0,1) vectors, each position rescaled to init_norm. The authors rescale after choosing;
    here candidates are rescaled first, so the batch kept is the one that scored best at the scale it starts
    from. The norm defaults to the model's own embedding norm (the paper's 1.4 was tuned for Phi-1.5;
    SmolLM2's median is 3.1).
    init="lm": the embeddings of LM samples under the class instruction (GRADMM refining LM text, a variant);
    with init_select="rows", the B of all sampled rows whose set matches best (`select_rows`).
    Returns (X, the token ids of the kept LM batch (None for init="random"), f of each candidate batch in the
    order drawn: the first is what an unmatched start would keep).
    """
    cfg = problem.cfg
    norm = cfg.init_norm or median_embedding_norm(problem.model)
    best, best_ids, best_loss = None, None, math.inf
    L, d = problem.layout.seq_len, problem.emb.shape[1]
    sampled, losses, best_k = [], [], 0
    for k in range(cfg.init_candidates):
        if cfg.init == "lm":
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            ids = problem.sample_ids(batch_size, seed)
            if cfg.init_select == "rows":  # every drawn row is a candidate; otherwise only the best batch is kept
                sampled.append(ids)
            X = problem.freeze(problem.emb[ids])
        else:
            ids = None
            X = torch.randn(batch_size, L, d, generator=generator).to(problem.emb.device)
            X = problem.freeze(X / X.norm(dim=-1, keepdim=True) * norm)
        loss = problem.f(X).item() if cfg.matching_weight else 0.0
        losses.append(loss)
        if loss < best_loss:
            best, best_ids, best_loss, best_k = X, ids, loss, k
    if cfg.init_select == "rows" and cfg.matching_weight:
        best_ids = select_rows(problem, torch.cat(sampled), start=best_k)
        best = problem.freeze(problem.emb[best_ids])
    return best, best_ids, losses


def select_rows(problem: Problem, ids: torch.Tensor, start: int, max_exchanges: int = 200) -> torch.Tensor:
    """B of the N = k·B candidate rows `ids` (k batches of B, stacked), chosen to lower the set's matching loss:
    from batch `start` (the best whole batch), apply the best exchange of a kept row for a candidate row while it
    lowers f (every f exact, from Gram matrices: one forward for all N rows). Returns the kept rows' ids."""
    h = last_hidden(problem.model, input_ids=ids)
    set_f = SubsetMatchLoss(h, head_logits(problem.model, h), problem.y, problem.target)
    N, B = ids.shape[0], ids.shape[0] // problem.cfg.init_candidates
    kept = list(range(start * B, (start + 1) * B))
    f = set_f(torch.tensor(kept))
    for _ in range(max_exchanges):
        out = [c for c in range(N) if c not in kept]
        trials = [(i, c) for i in range(B) for c in out]
        losses = torch.stack([set_f(torch.tensor(kept[:i] + [c] + kept[i + 1:])) for i, c in trials])
        best = int(losses.argmin())
        if losses[best] >= f:
            break
        i, c = trials[best]
        kept[i], f = c, losses[best]
    return ids[torch.tensor(kept, device=ids.device)]


def save_checkpoint(path: Path, X, Lam, Z_ids, opt, rho, t, best, history) -> None:
    """The batch's state after outer iteration t − 1, as data (safetensors + JSON: never pickle)."""
    opt_state = opt.state_dict()
    tensors = {"X": X, "Lam": Lam, "Z_ids": Z_ids, "best_ids": best["ids"], "best_logppl": best["logppl"],
               **{f"adam.{k}": v for k, v in opt_state["state"].get(0, {}).items()}}
    meta = {"rho": rho, "t": t, "best_f_Z": best["f_Z"], "best_t": best["t"], "history": history,
            "adam_param_groups": opt_state["param_groups"]}
    save_tensors(path, tensors, meta)


def load_checkpoint(path: Path, X_like: torch.Tensor, lr: float):
    """(X, Adam, Λ, ρ, t, Z ids, best, history) from `save_checkpoint`'s file, on X_like's device."""
    tensors, meta = load_tensors(path)
    dev = X_like.device
    X = tensors["X"].to(dev).requires_grad_(True)
    opt = torch.optim.Adam([X], lr=lr)
    adam = {k.removeprefix("adam."): v for k, v in tensors.items() if k.startswith("adam.")}
    opt.load_state_dict({"state": {0: adam} if adam else {}, "param_groups": meta["adam_param_groups"]})
    Z_ids = None if tensors["Z_ids"] is None else tensors["Z_ids"].to(dev)
    best = {"f_Z": meta["best_f_Z"], "ids": tensors["best_ids"], "logppl": tensors["best_logppl"], "t": meta["best_t"]}
    return X, opt, tensors["Lam"].to(dev), meta["rho"], meta["t"], Z_ids, best, meta["history"]


@dataclass
class BatchState:
    """One batch's ADMM state: its own X and Adam, dual Λ, penalty ρ, next outer step t, last Z, best Z, history."""

    X: torch.Tensor
    opt: torch.optim.Adam
    Lam: torch.Tensor
    rho: float
    t: int
    Z_ids: torch.Tensor | None
    best: dict
    history: list
    checkpoint: Path | None
    init_ids: torch.Tensor | None = None
    init_losses: list | None = None
    Z: torch.Tensor | None = None


def start_batch(problem: Problem, batch_size: int, seed: int, checkpoint: Path | None) -> BatchState:
    """A batch's state: from its checkpoint if one exists, else freshly initialised from `seed`."""
    cfg = problem.cfg
    if checkpoint is not None and checkpoint.exists():
        # Saved from the CPU: a batch checkpointed on a GPU resumes on a CPU (the full profile moves between
        # them); Adam's state follows its parameter's device.
        X, opt, Lam, rho, t, Z_ids, best, history = load_checkpoint(checkpoint, problem.emb, cfg.lr)
        return BatchState(X, opt, Lam, rho, t, Z_ids, best, history, checkpoint)  # ADMM ran: no init to report
    X, init_ids, init_losses = initialise(problem, batch_size, torch.Generator().manual_seed(seed))
    X.requires_grad_(True)
    return BatchState(X, torch.optim.Adam([X], lr=cfg.lr), torch.zeros_like(X), cfg.rho, 0, None,
                      {"f_Z": math.inf, "ids": None, "logppl": None, "t": -1}, [], checkpoint, init_ids, init_losses)


def settled(cfg: GenerateConfig, state: BatchState) -> bool:
    """Whether a batch stops before outer_steps: Z has settled (few tokens change) or f(Z) has not improved on
    its best for `stop_patience` Z-steps. Read from the history, so a resumed batch decides as it would have."""
    if cfg.projection != "admm" or not state.history:
        return False
    last = state.history[-1]
    if last["t"] > 0 and last["changed_fraction"] < cfg.stop_changed_fraction:
        return True
    return bool(cfg.stop_patience) and last["t"] - state.best["t"] >= cfg.stop_patience


def project_stacked(problem: Problem, E: torch.Tensor, rhos: list[float], progress: bool):
    """The Z-step of batches stacked in E: one decoding pass for all rows (ρ enters only order="proximal", so
    batches with different ρ are projected apart there)."""
    if len(set(rhos)) == 1 or problem.cfg.order != "proximal":
        return problem.project(E, progress, rhos[0])
    B = E.shape[0] // len(rhos)
    parts = [problem.project(E[i * B:(i + 1) * B], progress, rho) for i, rho in enumerate(rhos)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def outer_iteration(problem: Problem, live: list[BatchState], t: int, progress: bool) -> list[dict]:
    """One outer iteration (Z-step, inner X-steps, dual update) of the batches in `live`, all at step t: each
    matrix product runs over all their rows, every update stays per batch. Returns each batch's record."""
    cfg, dev, n = problem.cfg, problem.emb.device, len(live)
    B = live[0].X.shape[0]
    use_admm = cfg.projection == "admm"
    free_mask = 1 - problem.fixed_mask
    records = [{"t": t, "rho": b.rho} for b in live]
    if use_admm:  # Z-step
        ids, logppl = project_stacked(problem, torch.cat([b.X.detach() + b.Lam / b.rho for b in live]),
                                      [b.rho for b in live], progress)
        f_Z = problem.f_each(n, ids=ids).tolist()
        for i, (b, record) in enumerate(zip(live, records)):
            prev, b.Z_ids = b.Z_ids, ids[i * B:(i + 1) * B]
            b.Z = problem.emb[b.Z_ids] * free_mask + problem.fixed_embeds
            row_logppl = logppl[i * B:(i + 1) * B]
            changed = 1.0 if prev is None else (b.Z_ids != prev)[:, problem.layout.free].float().mean().item()
            record.update(f_Z=f_Z[i], changed_fraction=changed, logppl_Z=row_logppl.mean().item(),
                          dual_residual=0.0 if prev is None else
                          b.rho * (b.Z - (problem.emb[prev] * free_mask + problem.fixed_embeds)).norm().item())
            if f_Z[i] < b.best["f_Z"]:
                b.best = {"f_Z": f_Z[i], "ids": b.Z_ids.cpu(), "logppl": row_logppl.cpu(), "t": t}
    for s in range(cfg.inner_steps):  # X-step
        if cfg.matching_weight:
            f_X = problem.f_each(n, X=torch.cat([b.X for b in live]))
            grads_f = torch.autograd.grad(f_X.sum(), [b.X for b in live])  # batch i's f depends on its X only
        else:
            f_X, grads_f = torch.zeros(n, device=dev), [torch.zeros_like(b.X) for b in live]
        for i, (b, record) in enumerate(zip(live, records)):
            grad_pen = b.rho * (b.X.detach() - b.Z + b.Lam / b.rho) if use_admm else torch.zeros_like(b.X)
            grad = (cfg.matching_weight * grads_f[i] + grad_pen) * free_mask  # template positions stay frozen
            if s == 0:  # diagnostics: is the matching term heard next to the penalty? (variants study)
                record.update(f_X=f_X[i].item(),
                              grad_norm_match=(cfg.matching_weight * grads_f[i] * free_mask).norm().item(),
                              grad_norm_penalty=(grad_pen * free_mask).norm().item())
            norm = grad.norm()
            if norm > cfg.grad_clip:
                grad = grad * (cfg.grad_clip / norm)
            b.X.grad = grad
            b.opt.step()
    for b, record in zip(live, records):
        if use_admm:
            b.Lam = b.Lam + b.rho * (b.X.detach() - b.Z) * free_mask  # dual ascent
            primal = (b.X.detach() - b.Z).norm().item()
            record.update(primal_residual=primal, dual_norm=(b.Lam / b.rho).norm(dim=-1).mean().item())
            if cfg.rho_growth != 1.0:
                b.rho *= cfg.rho_growth
            elif cfg.adaptive_rho and t > 0:
                if primal > 10 * record["dual_residual"]:
                    b.rho *= 2
                elif record["dual_residual"] > 10 * primal:
                    b.rho /= 2
        b.history.append(record)
        b.t = t + 1
        if b.checkpoint is not None:
            save_checkpoint(b.checkpoint, b.X, b.Lam, b.Z_ids, b.opt, b.rho, b.t, b.best, b.history)
    return records


def run_batches(problem: Problem, batch_size: int, seeds: list[int], checkpoints: list[Path | None] | None = None,
                progress: bool = True) -> list[dict]:
    """Generate several batches of B sequences of one class, stepped together (`outer_iteration`); batch i
    draws its start from seeds[i] and checkpoints to checkpoints[i] after every outer iteration, and resumes
    from it. Returns, per batch: ids, per-sample loss and log-perplexity, f(Z), history."""
    cfg = problem.cfg
    use_admm = cfg.projection == "admm"
    states = [start_batch(problem, batch_size, seed, ckpt)
              for seed, ckpt in zip(seeds, checkpoints or [None] * len(seeds))]
    t0 = min(b.t for b in states)
    outer = tqdm(range(t0, cfg.outer_steps), desc="ADMM outer", leave=False, disable=not progress,
                 initial=t0, total=cfg.outer_steps)
    for t in outer:
        live = [b for b in states if b.t == t and not settled(cfg, b)]  # a batch resumed further on waits
        if live:
            records = outer_iteration(problem, live, t, progress)
            outer.set_postfix({k: round(sum(r[k] for r in records) / len(records), 4)
                               for k in ("f_Z", "f_X", "changed_fraction") if k in records[0]})
    if cfg.outer_steps:  # final projection of the last iterates; each batch keeps its best-matching Z-step
        E = torch.cat([b.X.detach() + (b.Lam / b.rho if use_admm else 0) for b in states])
        ids, logppl = project_stacked(problem, E, [b.rho if use_admm else 0.0 for b in states], progress)
        f_final = problem.f_each(len(states), ids=ids).tolist()
        for i, b in enumerate(states):
            if f_final[i] <= b.best["f_Z"]:
                rows = slice(i * batch_size, (i + 1) * batch_size)
                b.best = {"f_Z": f_final[i], "ids": ids[rows].cpu(), "logppl": logppl[rows].cpu(), "t": cfg.outer_steps}
    return [finish_batch(problem, b, progress) for b in states]


def finish_batch(problem: Problem, state: BatchState, progress: bool) -> dict:
    """A batch's result from its best Z (the LM's own tokens without ADMM), after the exact swaps if any."""
    cfg, dev, best = problem.cfg, problem.emb.device, state.best
    if cfg.outer_steps == 0:  # no ADMM (init lm, swaps only): the LM's own tokens are the start
        ids = state.init_ids.to(dev)
        best = {"f_Z": problem.f_ids(ids).item(), "ids": ids.cpu(), "logppl": problem.log_ppl(ids).cpu(), "t": 0}
    swaps = {}
    if cfg.swap_steps:  # exact swaps from the kept tokens: every applied swap lowers f(Z)
        ids, steps = refine_by_swaps(problem, best["ids"].to(dev), cfg.swap_steps, cfg.swap_next_topk,
                                     cfg.swap_candidates, progress)
        swaps = {"f_Z_before_swaps": best["f_Z"], "swaps": steps}
        best = {"f_Z": problem.f_ids(ids).item(), "ids": ids.cpu(), "logppl": problem.log_ppl(ids).cpu(), "t": best["t"]}
    ids = best["ids"].to(dev)
    return {"ids": ids.cpu(), "per_sample_loss": problem.f_ids(ids, per_sample=True).cpu(),
            "logppl": best["logppl"], "f_Z": best["f_Z"], "best_t": best["t"],
            "f_X_final": problem.f(state.X.detach()).item(), "outer_steps_run": len(state.history),
            "history": state.history, **swaps,
            **({"f_init_candidates": state.init_losses} if state.init_losses is not None else {})}


def run_batch(problem: Problem, batch_size: int, seed: int, checkpoint: Path | None = None,
              progress: bool = True) -> dict:
    """Generate one batch of B sequences for one class (`run_batches` with one batch)."""
    return run_batches(problem, batch_size, [seed], [checkpoint], progress)[0]
