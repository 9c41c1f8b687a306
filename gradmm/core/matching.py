"""The matched quantity: the output-head gradient of the label-word loss, and its cosine distance to a target.

For one sequence with final (post-norm) hidden state h at the last position, p = softmax(W h + b) and the
label token y (the first token of the class's label word), the cross-entropy −log p[y] has the head gradient

    g_W = r hᵀ,   g_b = r,   r = p − e_y                    (the authors' compute_grads_lm)

and a batch of B sequences matches the batch mean (1/B) Σ_i r_i h_iᵀ. That is a V×d matrix (28M entries
for SmolLM2), so nothing here builds it per step: every quantity the cosine needs is a sum of products of
small Gram matrices (never V×d):

    <g_W, G*_W> = (1/B)(1/n) Σ_{i,j} w_j (r_iᵀ r*_j)(h_iᵀ h*_j)  [+ (1/B) Σ_i r_iᵀ N h_i with DP noise N]
    ‖g_W‖²      = (1/B²)     Σ_{i,i'}    (r_iᵀ r_i')(h_iᵀ h_i')

Autograd differentiates these w.r.t. h and p like any other function of the transformer's output, so the
"double backward" of the official code becomes one ordinary backward.

For a tied model (SmolLM2) W is the embedding matrix in its output role only: the gradient through the
input-embedding use of the same matrix is ignored (the output-side head gradient in closed form).
"""

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from gradmm.core.data import Example, Template
from gradmm.core.models import last_hidden, output_head
from gradmm.core.scoring import first_label_ids, pad_left, prompt_ids, template_prompt

# Gram products are accumulated in float64: the cosines of interest sit near 1 (distances of 0.005–0.02
# between real sets), and float32 sums over V = 49k terms lose the digits that tell them apart.
GRAM_DTYPE = torch.float64
_EPS = 1e-30  # guards 0/0 for an all-zero gradient (e.g. p = e_y exactly); never hit in practice


@dataclass
class Target:
    """A class-average head gradient, kept factored; the dense V×d target is never formed (but see `dense`).

        G*_W = (1/n) Σ_j w_j r*_j h*_jᵀ + N_W        G*_b = (1/n) Σ_j w_j r*_j + N_b

    `weight` is 1 without DP and the clipping factor min(1, C/‖g_j‖) with it (gradmm.core.dp). The DP noise is
    dense (it has no low-rank structure) but is drawn once per class, so it is stored as is; its only
    per-step cost is N h_i, a V-vector per synthetic sequence.
    """

    R: Tensor  # (n, V) residuals r*_j = p*_j − e_y of the real examples
    H: Tensor  # (n, d) their final hidden states, already centred when `center` is set
    label_id: int  # the token y the residuals are taken for
    has_bias: bool  # match the bias gradient too (untied Phi-style heads)
    weight: Tensor | None = None  # (n,) per-example scale; None = all ones
    center: Tensor | None = None  # (d,) subtracted from every hidden state, real and synthetic alike
    # The label words' token ids when the matched cross-entropy is the fine-tuning loss (softmax over the label
    # words only; `residuals`); None = the paper's, softmax over the whole vocabulary
    label_words: tuple[int, ...] | None = None
    noise_W: Tensor | None = None  # (V, d) Gaussian DP noise, drawn once (or a whole DP release: `released`)
    noise_b: Tensor | None = None  # (V,) present iff noise_W is and the head has a bias
    sigma: float = 0.0  # the noise's per-coordinate standard deviation (for logs)
    # Derived once in __post_init__ (dataclasses.replace recomputes them).
    G_b: Tensor = field(init=False, repr=False)  # (V,) the bias target is only V entries: kept dense
    sq_norm_W: float = field(init=False)
    sq_norm_b: float = field(init=False)
    sq_norm_clean: float = field(init=False)  # ‖(S_W, S_b)‖² of the noise-free part, for the DP SNR

    def __post_init__(self):
        self.R, self.H = self.R.to(GRAM_DTYPE), self.H.to(GRAM_DTYPE)
        n = self.R.shape[0]
        if n == 0 or self.H.shape[0] != n:
            raise ValueError(f"a target needs n ≥ 1 matching rows of R and H, "
                             f"got {self.R.shape[0]} and {self.H.shape[0]}")
        if self.weight is None:
            self.weight = torch.ones(n, dtype=GRAM_DTYPE, device=self.R.device)
        self.weight = self.weight.to(GRAM_DTYPE)
        if (self.noise_b is not None) != (self.noise_W is not None and self.has_bias):
            raise ValueError("noise_b must be given exactly when noise_W is and the head has a bias")
        wR = self.R * self.weight[:, None] / n  # rows of the clean target's left factor
        gram = (wR @ wR.T) * (self.H @ self.H.T)
        s_W, s_b = gram.sum(), wR.sum(0)
        self.sq_norm_clean = (s_W + (s_b @ s_b if self.has_bias else 0.0)).item()
        if self.noise_W is None:
            self.sq_norm_W = s_W.item()
        else:  # ‖S + N‖² = ‖S‖² + 2<S, N> + ‖N‖², with <S, N> = Σ_j (w_j/n) r*_jᵀ N h*_j
            NH = (self.noise_W @ self.H.to(self.noise_W.dtype).T).to(GRAM_DTYPE)  # (V, n)
            cross = (wR * NH.T).sum()
            self.sq_norm_W = (s_W + 2 * cross + self.noise_W.to(GRAM_DTYPE).square().sum()).item()
        self.G_b = s_b if self.noise_b is None else s_b + self.noise_b.to(GRAM_DTYPE)
        self.sq_norm_b = (self.G_b @ self.G_b).item() if self.has_bias else 0.0

    @classmethod
    def released(cls, G_W: Tensor, G_b: Tensor | None, label_id: int, has_bias: bool, sigma: float) -> "Target":
        """A target known only as its dense matrices (a DP release read back): no per-example factors, the
        whole target in the dense term."""
        V, d = G_W.shape
        zeros = G_W.new_zeros
        return cls(R=zeros(1, V), H=zeros(1, d), label_id=label_id, has_bias=has_bias, weight=zeros(1),
                   noise_W=G_W, noise_b=G_b if has_bias else None, sigma=sigma)

    @property
    def n(self) -> int:
        return self.R.shape[0]

    def dense(self) -> tuple[Tensor, Tensor | None]:
        """(G*_W [V, d], G*_b [V] or None) in float64: for tests and debugging only (V×d memory)."""
        G_W = (self.R * self.weight[:, None] / self.n).T @ self.H
        if self.noise_W is not None:
            G_W = G_W + self.noise_W.to(GRAM_DTYPE)
        return G_W, (self.G_b if self.has_bias else None)


def target_on(target: Target, device: torch.device) -> Target:
    """The target with its tensors on `device` (a Ray worker's model may sit on another device than the driver's)."""
    if target.R.device == torch.device(device):
        return target
    moved = {k: None if getattr(target, k) is None else getattr(target, k).to(device)
             for k in ("R", "H", "weight", "center", "noise_W", "noise_b")}
    return replace(target, **moved)


def residuals(logits: Tensor, y: int | Tensor, label_words: tuple[int, ...] | None = None) -> Tensor:
    """r = softmax(logits) − e_y per row: the head gradient of the cross-entropy w.r.t. the logits.

    label_words: the cross-entropy of fine-tuning instead (gradmm.methods.finetune), a softmax over the label
    words' logits only; r is then zero outside those C entries, so the head gradient r hᵀ has C non-zero rows."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # ≥ fp32 (bf16 models)
    y = torch.as_tensor(y, device=logits.device).expand(logits.shape[0])
    if label_words is None:
        p = torch.softmax(logits, dim=-1)
        return p - F.one_hot(y, p.shape[-1]).to(p.dtype)
    words = torch.tensor(label_words, device=logits.device)
    is_y = (y[:, None] == words[None, :]).to(logits.dtype)  # (B, C) the one-hot among the label words
    if not bool((is_y.sum(1) == 1).all()):
        raise ValueError(f"label tokens {sorted(set(y.tolist()))} are not all among the label words {list(label_words)}")
    q = torch.softmax(logits[:, words], dim=-1)
    return logits.new_zeros(logits.shape).index_copy(1, words, q - is_y)


def _centred(h: Tensor, center: Tensor | None) -> Tensor:
    return h if center is None else h - center.to(h.dtype)


def _dots(h: Tensor, r: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """Per-sample <r_i h_iᵀ, G*_W> and <r_i, G*_b>, each (B,); the batch inner products are their means."""
    h, r = _centred(h, target.center).to(GRAM_DTYPE), r.to(GRAM_DTYPE)
    dot_W = ((r @ target.R.T) * (h @ target.H.T)) @ target.weight / target.n
    if target.noise_W is not None:  # r_iᵀ (N h_i): one (V, d)×(d, B) product, in the noise's dtype
        N = target.noise_W
        dot_W = dot_W + (r.to(N.dtype) * (h.to(N.dtype) @ N.T)).sum(-1).to(GRAM_DTYPE)
    dot_b = r @ target.G_b if target.has_bias else torch.zeros_like(dot_W)
    return dot_W, dot_b


def _cos(dot: Tensor, sq_norm_g: Tensor, sq_norm_target: float) -> Tensor:
    return dot / (sq_norm_g * sq_norm_target).clamp_min(_EPS).sqrt()


def match_loss_r(h: Tensor, r: Tensor, target: Target, per_sample: bool = False) -> Tensor:
    """`match_loss` from residuals r = p − e_y instead of logits (see there)."""
    dot_W, dot_b = _dots(h, r, target)
    h, r = _centred(h, target.center).to(GRAM_DTYPE), r.to(GRAM_DTYPE)
    if per_sample:  # each sequence alone: ‖r_i h_iᵀ‖² = ‖r_i‖² ‖h_i‖²
        rr = r.square().sum(-1)
        loss = 1 - _cos(dot_W, rr * h.square().sum(-1), target.sq_norm_W)
        if target.has_bias:
            loss = (loss + 1 - _cos(dot_b, rr, target.sq_norm_b)) / 2
        return loss
    B = h.shape[0]
    sq_W = ((r @ r.T) * (h @ h.T)).sum() / B**2
    loss = 1 - _cos(dot_W.mean(), sq_W, target.sq_norm_W)
    if target.has_bias:
        r_mean = r.mean(0)
        loss = (loss + 1 - _cos(dot_b.mean(), r_mean @ r_mean, target.sq_norm_b)) / 2
    return loss


class SubsetMatchLoss:
    """`match_loss` of any B rows out of N candidates (h (N, d), logits (N, V)), from (N, N) Grams built once:
    choosing which candidate texts form a batch costs no further forward and no V-sized product."""

    def __init__(self, h: Tensor, logits: Tensor, y: int | Tensor, target: Target):
        r = residuals(logits, y, target.label_words)
        self.dot_W, self.dot_b = _dots(h, r, target)
        h, r = _centred(h, target.center).to(GRAM_DTYPE), r.to(GRAM_DTYPE)
        self.RR = r @ r.T
        self.K = self.RR * (h @ h.T)
        self.target = target

    def __call__(self, rows: Tensor) -> Tensor:
        B, t = len(rows), self.target
        loss = 1 - _cos(self.dot_W[rows].mean(), self.K[rows][:, rows].sum() / B**2, t.sq_norm_W)
        if t.has_bias:  # ‖mean r‖² = Σ_{i,i'} r_iᵀ r_i' / B²
            loss = (loss + 1 - _cos(self.dot_b[rows].mean(), self.RR[rows][:, rows].sum() / B**2, t.sq_norm_b)) / 2
        return loss


def match_loss(h: Tensor, logits: Tensor, y: int | Tensor, target: Target, per_sample: bool = False) -> Tensor:
    """The official distance f = mean over τ ∈ {W, b (if the head has one)} of 1 − cos(G*_τ, g_τ) (the authors').

    h: (B, d) final hidden states, logits: (B, V) = W h + b of the *uncentred* h (the model's prediction),
    y: the label token. The batch's mean gradient is matched jointly (a scalar, as in the official code);
    with per_sample=True each sequence's own gradient is matched alone, giving (B,) (used by the filter).
    Differentiable w.r.t. h and logits; float64 result.
    """
    return match_loss_r(h, residuals(logits, y, target.label_words), target, per_sample)


def per_sample_match_loss(h: Tensor, logits: Tensor, y: int | Tensor, target: Target) -> Tensor:
    """(B,): 1 − cos of each sequence's own head gradient with the target (the filter's per-sample score)."""
    return match_loss(h, logits, y, target, per_sample=True)


def explicit_head_grad(h: Tensor, logits: Tensor, y: int | Tensor, center: Tensor | None = None,
                       bias: bool = True) -> tuple[Tensor, Tensor | None]:
    """Dense batch-mean (g_W [V, d], g_b [V] or None) in float64: tests and debugging only."""
    r = residuals(logits, y).to(GRAM_DTYPE)
    h = _centred(h, center).to(GRAM_DTYPE)
    return r.T @ h / h.shape[0], (r.mean(0) if bias else None)


def head_logits(model, h: Tensor) -> Tensor:
    """Logits of the output head for final hidden states h (B, d), in float32."""
    W, b = output_head(model)
    return F.linear(h.to(W.dtype), W, b).float()


# ---- real (and synthetic) texts through the model ------------------------------------------------------

@torch.no_grad()
def hidden_and_logits(model, tokenizer, texts: list[str], template: Template, batch_size: int = 16,
                      max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """(H (N, d), logits (N, V)) at the last position of template.prompt(text), float32, batched.

    Left padding puts every last position at the end; `last_hidden` passes explicit position ids so a padded
    row gives the same h as the unpadded sequence (the official code ran one sequence at a time).
    Each text is cut to the template's max_text_tokens (scoring.template_prompt, as in scoring and fine-tuning);
    max_tokens, if given, also cuts the whole prompt from the left.
    """
    if not texts:
        raise ValueError("no texts given")
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, template_prompt(tokenizer, template, t), max_tokens) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    H = torch.empty(len(texts), model.config.hidden_size, device=device)
    logits = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad_left([encoded[i] for i in idx], tokenizer.pad_token_id, device)
        h = last_hidden(model, input_ids=ids, attention_mask=mask).float()
        z = head_logits(model, h)
        if logits is None:
            logits = torch.empty(len(texts), z.shape[-1], device=device)
        H[idx], logits[idx] = h, z
    return H, logits


def head_grads(model, tokenizer, texts: list[str], template: Template, label: int, batch_size: int = 16,
               max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-example head gradients of texts for class `label`, factored: (R (N, V), H (N, d)), g_j = r_j h_jᵀ."""
    y = first_label_ids(tokenizer, template)[label]
    H, logits = hidden_and_logits(model, tokenizer, texts, template, batch_size, max_tokens)
    return residuals(logits, y), H


def _resolve_center(center: Tensor | str | None, H_pool: Tensor) -> Tensor | None:
    """None, a given (d,) vector, or "pool": the mean of the given final hidden states."""
    if isinstance(center, str):
        if center != "pool":
            raise ValueError(f"center {center!r}: use None, a (d,) tensor or 'pool'")
        return H_pool.mean(0)
    return center


def class_targets(model, tokenizer, examples: list[Example], template: Template, batch_size: int = 16,
                  max_tokens: int | None = None, center: Tensor | str | None = None,
                  label_words_only: bool = False) -> list[Target]:
    """One Target per class: the average per-example head gradient of that class's real examples (as the authors).

    center: None (the paper), a (d,) vector, or "pool" = the mean final hidden state over *all* given
    examples (both classes; the feasibility study's centred variant). Centring subtracts the
    vector from real and synthetic hidden states alike, so the matched W-gradient is mean_i r_i (h_i − c)ᵀ;
    the residuals (the model's prediction) are unchanged. A "pool" centre is computed from the real data: it
    is not covered by the DP noise of gradmm.core.dp (pass a public vector for a private run).
    label_words_only: match the gradient of fine-tuning's cross-entropy (softmax over the template's label words)
    instead of the paper's (over the vocabulary); the targets carry the label words for the synthetic side.
    """
    n_classes = len(template.label_words)
    ys = first_label_ids(tokenizer, template)
    by_class = [[ex.text for ex in examples if ex.label == c] for c in range(n_classes)]
    for c, texts in enumerate(by_class):
        if not texts:
            raise ValueError(f"class {c} (label word {template.label_words[c]!r}) has no real examples")
    stats = [hidden_and_logits(model, tokenizer, texts, template, batch_size, max_tokens) for texts in by_class]
    center = _resolve_center(center, torch.cat([H for H, _ in stats]))
    _, b = output_head(model)
    words = tuple(ys) if label_words_only else None
    return [Target(R=residuals(logits, ys[c], words), H=_centred(H, center), label_id=ys[c], has_bias=b is not None,
                   center=center, label_words=words) for c, (H, logits) in enumerate(stats)]


def joint_target(model, tokenizer, examples: list[Example], template: Template, batch_size: int = 16,
                 max_tokens: int | None = None, center: Tensor | str | None = None,
                 label_words_only: bool = False) -> Target:
    """The average head gradient of all examples, each for its own label (the joint-target variant): the gradient that
    fine-tuning on them takes, G* = (1/n) Σ_j (p_j − e_{y_j}) h_jᵀ. Its `label_id` is −1: a synthetic batch
    matched against it carries one label per row (`JointProblem`). `center`, `label_words_only` as in `class_targets`."""
    if not examples:
        raise ValueError("no examples given")
    ys = first_label_ids(tokenizer, template)
    H, logits = hidden_and_logits(model, tokenizer, [ex.text for ex in examples], template, batch_size, max_tokens)
    center = _resolve_center(center, H)
    y = torch.tensor([ys[ex.label] for ex in examples], device=logits.device)
    _, b = output_head(model)
    words = tuple(ys) if label_words_only else None
    return Target(R=residuals(logits, y, words), H=_centred(H, center), label_id=-1, has_bias=b is not None,
                  center=center, label_words=words)


def cosine_distance_to_target(model, tokenizer, texts: list[str], template: Template, target: Target,
                              per_sample: bool = False, batch_size: int = 16, max_tokens: int | None = None) -> Tensor:
    """Match loss of real or synthetic texts against a target, labelled with the target's label token.

    per_sample=False: one scalar for the set's mean gradient (how well the set matches, as a batch);
    per_sample=True: (N,) one distance per text (the filter's score). Uses the target's centre and noise.
    """
    H, logits = hidden_and_logits(model, tokenizer, texts, template, batch_size, max_tokens)
    return match_loss(H, logits, target.label_id, target, per_sample=per_sample).detach()
