"""Matching the gradient fine-tuning takes over every weight, for choosing a training set among candidate texts.

The paper matches the output head's gradient of the label word's cross-entropy over the vocabulary. Over the
committed training sets of the quality studies, the distance that ranks sets by the accuracy they train to is
another one: fine-tuning's own loss (softmax over the label words), all weights, the whole set in one mean
(gradmm.experiments.gradient_agreement; reports/README.md). That gradient has 135M entries for SmolLM2, too many to
keep per text, so each per-text gradient is kept as a sketch: folded to k coordinates after a random sign per
weight (a count sketch with hash i mod k). Sketching is linear and ⟨S a, S b⟩ is an unbiased estimate of ⟨a, b⟩,
so a set's cosine to the reference is computed from the candidates' sketches alone.

`choose_matching_set` then keeps n texts per class whose mean gradient is closest in cosine to the reference
(the pool's), by exact exchanges of a kept text for an unkept one of the same class (from the Gram matrix of the
sketches), as gradmm.core.admm.select_rows does for the head gradient.
"""

import contextlib

import torch
from tqdm.auto import tqdm

from gradmm.core.data import Example, Template
from gradmm.core.scoring import first_label_ids
from gradmm.methods.finetune import classification_loss

SKETCH_DIM = 2 ** 20
GRADIENT_BATCH = 10


class GradientSketch:
    """k-dimensional sketches of gradients over a model's trainable weights (fixed random signs, from `seed`)."""

    def __init__(self, model, k: int = SKETCH_DIM, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.k = k
        self.params = [p for p in model.parameters()]
        self.signs = [(torch.randint(0, 2, (p.numel(),), generator=gen, dtype=torch.int8) * 2 - 1) for p in self.params]
        # one zero-padded buffer per weight, reused by every call: fresh 100 MB tensors per text cost more in page
        # faults than the arithmetic
        self.buffers = [torch.zeros(p.numel() + (-p.numel()) % k) for p in self.params]

    def __call__(self, grads: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(self.k)
        for g, s, buf in zip(grads, self.signs, self.buffers):
            torch.mul(g.detach().reshape(-1).float().cpu(), s, out=buf[:s.numel()])
            out += buf.view(-1, self.k).sum(0)
        return out


@contextlib.contextmanager
def weight_gradients(model):
    """Every weight requires grad, with no .grad held, inside the block; afterwards .grad is dropped and the
    requires_grad flags are as they were."""
    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)
        for p, w in zip(model.parameters(), was):
            p.requires_grad_(w)


def loss_gradient(model, examples: list[Example], batch_loss) -> list[torch.Tensor]:
    """The gradient of the mean of `batch_loss(batch)` over `examples` (taken GRADIENT_BATCH at a time) w.r.t. every
    weight, one tensor per parameter; the weights' requires_grad flags are left as they were."""
    with weight_gradients(model):
        for start in range(0, len(examples), GRADIENT_BATCH):
            batch = examples[start:start + GRADIENT_BATCH]
            (batch_loss(batch) * len(batch) / len(examples)).backward()
        return [p.grad.detach().clone() for p in model.parameters()]


def fine_tuning_gradient(model, tokenizer, examples: list[Example], template: Template) -> list[torch.Tensor]:
    """The gradient of fine-tuning's loss (mean over `examples`) w.r.t. every weight (one tensor per parameter)."""
    label_ids = first_label_ids(tokenizer, template)
    return loss_gradient(model, examples,
                         lambda batch: classification_loss(model, tokenizer, batch, template, label_ids))


def example_sketches(model, tokenizer, examples: list[Example], template: Template, sketch: GradientSketch,
                     progress: bool = True) -> torch.Tensor:
    """(N, k): the sketch of each example's own fine-tuning gradient (as fine_tuning_gradient gives it, sketched
    straight from the weights' .grad, which is zeroed and reused rather than copied and reallocated per text)."""
    label_ids = first_label_ids(tokenizer, template)
    rows = []
    with weight_gradients(model):
        for ex in tqdm(examples, desc="per-text gradients", disable=not progress, leave=False):
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.zero_()
            classification_loss(model, tokenizer, [ex], template, label_ids).backward()
            rows.append(sketch([p.grad for p in model.parameters()]))
    return torch.stack(rows) if rows else torch.zeros(0, sketch.k)


def set_distance(K: torch.Tensor, b: torch.Tensor, ref_sq: float, kept: list[int]) -> float:
    """1 − cos(mean of the kept rows' gradients, reference), from the Gram matrix K and b = ⟨g_i, reference⟩."""
    idx = torch.tensor(kept)
    return 1 - float(b[idx].sum() / (K[idx][:, idx].sum() * ref_sq).sqrt())


def gram_terms(sketches: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(K, b, ‖reference‖²) in float64: the Gram matrix of the sketches and their products with the reference."""
    G, ref = sketches.double(), reference.double()
    return G @ G.T, G @ ref, float(ref @ ref)


def path_gram_terms(terms: list[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The Gram terms of the gradients at several checkpoints joined end to end, each checkpoint scaled by 1/‖its
    reference‖ so that every checkpoint counts as much (later in fine-tuning the gradients are smaller)."""
    K = sum(k / r for k, _, r in terms)
    b = sum(v / r for _, v, r in terms)
    return K, b, float(len(terms))


def class_gram_terms(sketches: torch.Tensor, labels: list[int],
                     references: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The Gram terms of the classes' gradients joined end to end: a set's vector is [Σ_{kept of class 0} g; Σ_{kept
    of class 1} g; ...] and the reference [the pool's class-0 mean; class-1 mean; ...]. One cosine then asks each
    class to push in its own class's direction, and the classes to push as hard as each other as the pool's do
    (the whole set's mean gradient leaves both free: a class can lean as long as the sum points the right way).
    K is block-diagonal (texts of different classes sit in different blocks); b_i = ⟨g_i, reference of i's class⟩."""
    G = sketches.double()
    y = torch.tensor(labels)
    K = (G @ G.T) * (y[:, None] == y[None, :])
    refs = torch.stack([r.double() for r in references])
    b = (G * refs[y]).sum(1)
    return K, b, float((refs * refs).sum())


def class_norm_ratios(K: torch.Tensor, labels: list[int], kept: list[int],
                      references: list[torch.Tensor]) -> list[float]:
    """Per class, ‖mean gradient of the kept texts‖ / ‖the pool's class mean‖ (from the sketches): how hard each
    class of the set pushes against the pool's same class; unequal ratios are a lean to the larger one."""
    out = []
    for c, ref in enumerate(references):
        idx = torch.tensor([i for i in kept if labels[i] == c])
        norm = float(K[idx][:, idx].sum().clamp_min(0).sqrt()) / len(idx) if len(idx) else 0.0
        out.append(round(norm / max(float(ref.double().norm()), 1e-30), 4))
    return out


def choose_matching_set(sketches: torch.Tensor, labels: list[int], reference: torch.Tensor, n_per_class: int,
                        max_exchanges: int = 500) -> tuple[list[int], dict]:
    """Indices of n_per_class rows per class (every class with at least that many) whose mean gradient is closest
    in cosine to `reference`. Start: per class, the rows with the best cosine of their own; then the best
    exchange of a kept row for an unkept row of the same class while it lowers the distance.
    Returns (kept indices, {"start_distance", "distance", "exchanges"})."""
    return choose_from_gram(*gram_terms(sketches, reference), labels, n_per_class, max_exchanges)


def choose_from_gram(K: torch.Tensor, b: torch.Tensor, ref_sq: float, labels: list[int], n_per_class: int,
                     max_exchanges: int = 500) -> tuple[list[int], dict]:
    """choose_matching_set from the Gram terms (gram_terms, or path_gram_terms for several checkpoints)."""
    own = b / (K.diagonal().clamp_min(1e-30) * ref_sq).sqrt()
    classes = sorted(set(labels))
    by_class = {c: [i for i, y in enumerate(labels) if y == c] for c in classes}
    for c, rows in by_class.items():
        if len(rows) < n_per_class:
            raise ValueError(f"class {c} has {len(rows)} candidate texts, fewer than n_per_class={n_per_class}")
    kept = [i for c in classes for i in sorted(by_class[c], key=lambda i: -float(own[i]))[:n_per_class]]
    start = dist = set_distance(K, b, ref_sq, kept)
    exchanges = 0
    for exchanges in range(max_exchanges):
        S = torch.tensor(kept)
        sum_b, sum_K, r = b[S].sum(), K[S][:, S].sum(), K[:, S].sum(1)  # r_j = Σ_{s∈S} K_js
        best = (dist, None)
        kept_set = set(kept)
        for c in classes:
            ins = torch.tensor([i for i in kept if labels[i] == c])
            outs = torch.tensor([j for j in by_class[c] if j not in kept_set])
            if not len(outs):
                continue
            # swapping i out and j in: Σb − b_i + b_j; ΣK − 2 r_i + K_ii + 2 (r_j − K_ji) + K_jj
            nb = sum_b - b[ins][:, None] + b[outs][None, :]
            nK = (sum_K - 2 * r[ins][:, None] + K[ins, ins][:, None] + 2 * (r[outs][None, :] - K[ins][:, outs])
                  + K[outs, outs][None, :])
            d = 1 - nb / (nK.clamp_min(1e-30) * ref_sq).sqrt()
            k = int(d.argmin())
            if float(d.view(-1)[k]) < best[0] - 1e-12:
                best = (float(d.view(-1)[k]), (int(ins[k // len(outs)]), int(outs[k % len(outs)])))
        if best[1] is None:
            break
        i, j = best[1]
        kept[kept.index(i)] = j
        dist = best[0]
    else:
        exchanges = max_exchanges
    return kept, {"start_distance": round(start, 6), "distance": round(dist, 6), "exchanges": exchanges}
