"""Real-data subsets of the generation pool at n texts per class (the only real text a method may see).

`select_random`, and the coreset methods of the dataset-distillation literature: `select_herding` (greedy kernel
herding / mean matching, Welling 2009, as used by iCaRL and the DC benchmark) and `select_kcenter` (greedy
k-center / farthest-first, Sener & Savarese 2018), both per class on text features (gradmm.methods.features).
"""

import random

import numpy as np
import torch
import torch.nn.functional as F

from gradmm.core.data import Example
from gradmm.methods.features import minilm_embeddings


def _per_class_indices(labels, n_per_class: int, n_classes: int | None = None) -> dict[int, list[int]]:
    labels = [int(y) for y in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be ≥ 1, got {n_per_class}")
    classes = range(n_classes) if n_classes is not None else sorted(set(labels))
    out = {}
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} examples in the pool, fewer than n_per_class={n_per_class}")
        out[c] = idx
    return out



def select_random(pool: list[Example], n_per_class: int, n_classes: int, seed: int) -> list[Example]:
    """n random examples of each class (stratified), reproducible from the seed; class by class."""
    rng = random.Random(seed)
    groups = _per_class_indices([ex.label for ex in pool], n_per_class, n_classes)
    return [pool[i] for c in range(n_classes) for i in rng.sample(groups[c], n_per_class)]



def _as_tensor(features, normalize: bool) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features.detach().cpu() if torch.is_tensor(features) else features),
                        dtype=torch.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, d) array, got shape {tuple(x.shape)}")
    return F.normalize(x, dim=1) if normalize else x



def select_herding(features, labels, n_per_class: int, normalize: bool = True) -> list[int]:
    """Per class, greedy herding: add the point that brings the mean of the selection closest to the class mean.

    Features are L2-normalised first (as in iCaRL). The first pick is the point nearest the class mean.
    Returns pool indices, class by class (ascending class id), in pick order; ties go to the lower index.
    """
    x = _as_tensor(features, normalize)
    picks = []
    for c, idx in _per_class_indices(labels, n_per_class).items():
        xc = x[idx]
        mu = xc.mean(0)
        total = torch.zeros_like(mu)
        free = torch.ones(len(idx), dtype=torch.bool)
        for k in range(n_per_class):
            dist = ((mu - (total + xc) / (k + 1)) ** 2).sum(1)
            dist[~free] = float("inf")
            j = int(torch.argmin(dist))  # first minimum: the lower index on ties
            free[j] = False
            total += xc[j]
            picks.append(idx[j])
    return picks



def select_kcenter(features, labels, n_per_class: int, seed: int = 0, normalize: bool = True,
                   start: str = "mean") -> list[int]:
    """Per class, greedy k-center (farthest-first): add the point farthest from its nearest selected point.

    start="mean" (default, deterministic, `seed` unused) begins at the point nearest the class mean;
    start="random" begins at a seeded random point. Euclidean distance, on L2-normalised features unless
    normalize=False. Returns pool indices, class by class, in pick order; ties go to the lower index.
    """
    if start not in ("mean", "random"):
        raise ValueError(f"start {start!r}: use 'mean' or 'random'")
    x = _as_tensor(features, normalize)
    rng = random.Random(seed)
    picks = []
    for c, idx in _per_class_indices(labels, n_per_class).items():
        xc = x[idx]
        first = int(torch.argmin(((xc - xc.mean(0)) ** 2).sum(1))) if start == "mean" else rng.randrange(len(idx))
        chosen = [first]
        nearest = torch.cdist(xc, xc[first:first + 1]).squeeze(1)  # distance to the nearest selected point
        for _ in range(n_per_class - 1):
            d = nearest.clone()
            d[chosen] = -1.0  # never re-pick (duplicates of a chosen point have distance 0 and come last)
            j = int(torch.argmax(d))
            chosen.append(j)
            nearest = torch.minimum(nearest, torch.cdist(xc, xc[j:j + 1]).squeeze(1))
        picks += [idx[j] for j in chosen]
    return picks



def coverage_radius(features, selected: list[int]) -> float:
    """Largest distance from any point to its nearest selected point (what k-center minimises)."""
    x = _as_tensor(features, normalize=False)
    return float(torch.cdist(x, x[selected]).min(1).values.max())



def select_coreset(pool: list[Example], method: str, n_per_class: int, n_classes: int, seed: int,
                   features=None) -> list[Example]:
    """random | herding | kcenter subset of the pool; features default to MiniLM embeddings of the texts."""
    if method == "random":
        return select_random(pool, n_per_class, n_classes, seed)
    if method not in ("herding", "kcenter"):
        raise ValueError(f"unknown selection method {method!r}: use random, herding or kcenter")
    if features is None:
        features = minilm_embeddings([ex.text for ex in pool])
    if len(features) != len(pool):
        raise ValueError(f"{len(features)} feature rows for a pool of {len(pool)} examples")
    labels = [ex.label for ex in pool]
    _per_class_indices(labels, n_per_class, n_classes)  # every class present with enough examples
    picks = (select_herding(features, labels, n_per_class) if method == "herding"
             else select_kcenter(features, labels, n_per_class, seed))
    return [pool[i] for i in picks]
