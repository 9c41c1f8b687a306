"""Does a class target tell the classes apart, and how close do synthetic texts get to it?

For each class target, the set-level match loss f (1 − cos of the set's mean head gradient with the target)
of: the run's synthetic texts of the class, held-out real texts of the same class and of the other classes
(dev split, never the pool the target was built from), and random allowed-token sequences of the same
length. Several disjoint sets of each kind give a spread (bootstrap-free: the sets are independent).
"""

import random

import torch

from gradmm.core.data import Task
from gradmm.core.matching import class_targets, cosine_distance_to_target
from gradmm.core.projection import allowed_token_mask


def _sets(texts: list[str], size: int, n_sets: int, seed: int) -> list[list[str]]:
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    return [texts[i * size:(i + 1) * size] for i in range(min(n_sets, len(texts) // size))]


def _summary(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": t.mean().item(), "std": t.std().item() if len(values) > 1 else 0.0, "n_sets": len(values)}


@torch.no_grad()
def target_distances(model, tokenizer, task: Task, synthetic: list[dict] | None = None, set_size: int = 10,
                     n_sets: int = 5, seed: int = 0, random_len: int = 24) -> list[dict]:
    """Per class: f of synthetic / same-class real / other-class real / random-token sets against its target."""
    targets = class_targets(model, tokenizer, task.pool, task.template)
    allowed = allowed_token_mask(tokenizer, model.get_input_embeddings().weight.shape[0]).nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c, target in enumerate(targets):
        def f(texts):
            return cosine_distance_to_target(model, tokenizer, texts, task.template, target).item()

        same = [ex.text for ex in task.dev if ex.label == c]
        other = [ex.text for ex in task.dev if ex.label != c]
        random_sets = [tokenizer.batch_decode(allowed[torch.randint(len(allowed), (set_size, random_len), generator=gen)])
                       for _ in range(n_sets)]
        row = {"class": task.class_names[c],
               "real_same_class": _summary([f(s) for s in _sets(same, set_size, n_sets, seed)]),
               "real_other_class": _summary([f(s) for s in _sets(other, set_size, n_sets, seed + 1)]),
               "random_tokens": _summary([f(s) for s in random_sets])}
        if synthetic:
            texts = [r["text"] for r in synthetic if r["label"] == c]
            if texts:
                row["synthetic"] = _summary([f(s) for s in _sets(texts, min(set_size, len(texts)), n_sets, seed)])
        out.append(row)
    return out


def format_distances(rows: list[dict]) -> str:
    kinds = ["synthetic", "real_same_class", "real_other_class", "random_tokens"]
    lines = ["| class | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for row in rows:
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f} ({row[k]['n_sets']})" if k in row else "–" for k in kinds]
        lines.append(f"| {row['class']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap_ci(values: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean of `values` ([nan, nan] for fewer than 2 values)."""
    if len(values) < 2:
        return [float("nan"), float("nan")]
    t = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(values), (n_boot, len(values)), generator=torch.Generator().manual_seed(seed))
    means = t[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return [lo, hi]
