"""The Z-step of ADMM: project continuous embeddings onto real tokens (the authors' top-k projection, word tokens only).

For every free position the k allowed tokens nearest (cosine) to the position vector are candidates; the
sequence is decoded left to right and at each position the candidate the LM finds most probable next is
taken, given a label-conditioned decoding prefix and the tokens chosen so far. The authors re-run the whole
prefix for every position; here the LM keeps a KV cache: one prefix forward, then one single-token forward
per position for the whole batch (`project_to_tokens_naive` is their way, kept as a reference).

Layout of a synthetic sequence (E's positions): [fixed prefix] + [free positions] + [fixed suffix]. Only the
free positions are decoded; fixed positions are copied from the given ids. The LM context of the free part is
decoding prefix + fixed prefix + chosen tokens; when that context would start empty, the model's BOS token
is used (or, for a model without one, the first free token is the nearest allowed token and is not scored).
"""

import re

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.core.models import input_embeddings
from gradmm.core.perplexity import as_ids, context_ids

ORDERS = ("nearest_then_probable", "probable_then_nearest", "proximal")
# Word tokens only: ASCII letters, optionally one leading space (a word start such as " great"), at most 17
# letters (the authors' length limit). Digits, punctuation, apostrophes and whitespace pieces are out.
WORD_TOKEN = re.compile(r" ?[A-Za-z]{1,17}")
_MASK_CACHE: dict[int, tuple[object, int, torch.Tensor]] = {}


def allowed_token_mask(tokenizer, num_embeddings: int | None = None) -> torch.Tensor:
    """BoolTensor[num_embeddings] (default len(tokenizer)): True for word tokens the projection may emit.

    Ids the tokenizer does not know (>= len(tokenizer), e.g. Phi's padding rows of the embedding matrix) are
    banned, unlike the authors' code (rebuilding its ban list, it lets them through); a shorter num_embeddings
    drops ids the model lacks.
    """
    n = len(tokenizer) if num_embeddings is None else num_embeddings
    hit = _MASK_CACHE.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer and hit[1] == n:  # the tokenizer is kept so its id can't be reused
        return hit[2].clone()
    known = min(n, len(tokenizer))
    # Decode each id on its own (0.3 s for 49k ids with a fast tokenizer): a partial UTF-8 byte decodes to
    # U+FFFD and fails the pattern, as it should.
    texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:known] = torch.tensor([WORD_TOKEN.fullmatch(t) is not None for t in texts], dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    special |= {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special}
    for i in special:
        if 0 <= i < n:
            mask[i] = False
    _MASK_CACHE[id(tokenizer)] = (tokenizer, n, mask)
    return mask.clone()


def _fit_mask(allowed: torch.Tensor, vocab: int, device) -> torch.Tensor:
    """The mask sized to the embedding rows: rows past the mask are banned, mask ids past the rows dropped."""
    allowed = allowed.to(device=device, dtype=torch.bool)
    if allowed.numel() >= vocab:
        return allowed[:vocab]
    return torch.cat([allowed, allowed.new_zeros(vocab - allowed.numel())])


def _check_k(k: int, allowed: torch.Tensor) -> None:
    n = int(allowed.sum())
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the allowed vocabulary size {n}")


def nearest_tokens(E: torch.Tensor, emb: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """LongTensor[B, L, k]: the k allowed tokens with the highest cosine similarity to each E[b, l]."""
    allowed = _fit_mask(allowed, emb.shape[0], emb.device)
    _check_k(k, allowed)
    with torch.no_grad():
        emb_n = F.normalize(emb.float(), dim=-1)
        sims = F.normalize(E.detach().to(emb.device).float(), dim=-1) @ emb_n.T  # (B, L, V)
        sims.masked_fill_(~allowed, float("-inf"))
        return sims.topk(k, dim=-1).indices


def embedding_only_decode(E: torch.Tensor, emb: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """LongTensor[B, L]: the nearest allowed token per position, no LM (the "no projection" ablation)."""
    return nearest_tokens(E, emb, allowed, 1)[..., 0]








class _Chooser:
    """Picks the next token per row from the LM's next-token logits and the position vectors.

    Shared by the cached and the naive projection so that both break ties identically.
    """

    def __init__(self, E_free, emb, allowed, k, order, rho=0.0):
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}: use one of {ORDERS}")
        self.allowed = _fit_mask(allowed, emb.shape[0], emb.device)
        _check_k(k, self.allowed)
        self.k, self.order, self.rho = k, order, rho
        self.emb, self.E = emb.detach().float(), E_free.detach().to(emb.device).float()  # (B, n_free, d)
        self.emb_n, self.E_n = F.normalize(self.emb, dim=-1), F.normalize(self.E, dim=-1)
        if order != "probable_then_nearest":  # candidates depend on E only: rank them all at once
            sims = self.E_n @ self.emb_n.T
            sims.masked_fill_(~self.allowed, float("-inf"))
            self.knn = sims.topk(k, dim=-1).indices  # (B, n_free, k)
            del sims

    def first_without_context(self, j):
        """Nearest allowed token at position j (used when the LM has nothing to condition on)."""
        if self.order != "probable_then_nearest":
            return self.knn[:, j, 0]
        sims = self.E_n[:, j] @ self.emb_n.T
        return sims.masked_fill_(~self.allowed, float("-inf")).argmax(-1)

    def __call__(self, logits, j):
        """(token ids LongTensor[B], NLL of those tokens under the LM FloatTensor[B]) at free position j."""
        logits = logits.float()
        if self.order == "nearest_then_probable":
            cand = self.knn[:, j]  # (B, k) nearest allowed tokens, best first
            pick = logits.gather(1, cand).argmax(-1)  # the most probable of them
        elif self.order == "proximal":
            # The exact ADMM Z-step for the regulariser h(z) = −log p(z | context): argmin over the candidates of
            # −log p(z) + ρ/2 ‖e_z − (X + Λ/ρ)‖². Small ρ: the LM's favourite (as above); as ρ grows, the nearest
            # token, so that a Z already at X is a fixed point and the iteration can settle.
            cand = self.knn[:, j]
            d2 = (self.emb[cand] - self.E[:, j, None]).square().sum(-1)
            pick = (logits.log_softmax(-1).gather(1, cand) - self.rho / 2 * d2).argmax(-1)
        else:  # the paper reader's order: the k most probable allowed tokens, then the nearest of those
            cand = logits.masked_fill(~self.allowed, float("-inf")).topk(self.k, dim=-1).indices
            cos = torch.einsum("bkd,bd->bk", self.emb_n[cand], self.E_n[:, j])
            pick = cos.argmax(-1)
        tok = cand.gather(1, pick[:, None])[:, 0]
        nll = -logits.log_softmax(-1).gather(1, tok[:, None])[:, 0]
        return tok, nll


def _layout(E, fixed_prefix_ids, fixed_suffix_ids, device):
    fp, fs = as_ids(fixed_prefix_ids, device), as_ids(fixed_suffix_ids, device)
    if E.dim() != 3:
        raise ValueError(f"E must be (B, L, d), got shape {tuple(E.shape)}")
    n_free = E.shape[1] - fp.numel() - fs.numel()
    if n_free < 1:
        raise ValueError(f"E has {E.shape[1]} positions, no free one after {fp.numel()} fixed prefix and "
                         f"{fs.numel()} fixed suffix tokens")
    return fp, fs, n_free


def _assemble(fp, free, fs, nlls, n_scored):
    """Output ids [fixed prefix | free | fixed suffix] and the per-row mean NLL of the scored free tokens."""
    B = free.shape[0]
    ids = torch.cat([fp.expand(B, -1), free, fs.expand(B, -1)], dim=1)
    logppl = torch.stack(nlls, 1).sum(1) / n_scored if n_scored else torch.full((B,), float("nan"), device=free.device)
    return ids, logppl


@torch.no_grad()
def project_to_tokens(model, E, prefix_ids, allowed, k, order="nearest_then_probable", fixed_suffix_ids=None,
                      fixed_prefix_ids=None, progress=True, rho=0.0, emb=None, teacher_ids=None):
    """Decode E's free positions to tokens, left to right with a KV cache.

    Returns (ids LongTensor[B, L] with the fixed tokens in place, logppl FloatTensor[B]): the mean natural-log
    NLL of the free tokens given decoding prefix + fixed prefix + the free tokens before them.
    `rho`: the ADMM penalty, used by order="proximal" only. `emb`: input_embeddings(model) if already at hand
    (for a scaled embedding it is computed, not just read). `teacher_ids` (B, n_free): feed these tokens as the
    context instead of the chosen ones, so each position's choice is made after the same context (for comparing
    two models' choices position by position); the chosen tokens are returned as usual.
    """
    emb = input_embeddings(model) if emb is None else emb  # as fed to the first layer: the space E lives in
    device = emb.device
    fp, fs, n_free = _layout(E, fixed_prefix_ids, fixed_suffix_ids, device)
    B = E.shape[0]
    choose = _Chooser(E[:, fp.numel():fp.numel() + n_free], emb, allowed, k, order, rho)
    ctx = context_ids(model, prefix_ids, fp, device)
    free, nlls = [], []
    cache = logits = None
    if ctx.numel():
        # The context is the same for every row: run it once and repeat its cache for the B rows.
        out = model(input_ids=ctx[None], use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1].expand(B, -1)
        cache.batch_repeat_interleave(B)
    for j in tqdm(range(n_free), desc="Z-step", leave=False, disable=not progress):
        if logits is None:  # no BOS and no context: the first token is the nearest one, unscored
            tok = choose.first_without_context(j)
        else:
            tok, nll = choose(logits, j)
            nlls.append(nll)
        free.append(tok)
        if j + 1 < n_free:  # feed the chosen tokens as the next single-token step of every row
            fed = tok if teacher_ids is None else teacher_ids[:, j].to(device)
            out = model(input_ids=fed[:, None], past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    return _assemble(fp, torch.stack(free, 1), fs, nlls, len(nlls))


@torch.no_grad()
def project_to_tokens_naive(model, E, prefix_ids, allowed, k, order="nearest_then_probable", fixed_suffix_ids=None,
                            fixed_prefix_ids=None, progress=True, rho=0.0, emb=None):
    """project_to_tokens without a KV cache: a full forward of the growing sequence per position (the
    authors' way). A reference for tests and the benchmark; same arguments and results."""
    emb = input_embeddings(model) if emb is None else emb  # as fed to the first layer: the space E lives in
    device = emb.device
    fp, fs, n_free = _layout(E, fixed_prefix_ids, fixed_suffix_ids, device)
    B = E.shape[0]
    choose = _Chooser(E[:, fp.numel():fp.numel() + n_free], emb, allowed, k, order, rho)
    ctx = context_ids(model, prefix_ids, fp, device).expand(B, -1)
    free, nlls = [], []
    for j in tqdm(range(n_free), desc="Z-step (naive)", leave=False, disable=not progress):
        seq = torch.cat([ctx] + [t[:, None] for t in free], dim=1)
        if seq.shape[1] == 0:
            tok = choose.first_without_context(j)
        else:
            tok, nll = choose(model(input_ids=seq, use_cache=False, logits_to_keep=1).logits[:, -1], j)
            nlls.append(nll)
        free.append(tok)
    return _assemble(fp, torch.stack(free, 1), fs, nlls, len(nlls))


