"""Perplexity, leakage and diversity of the training sets of the variants study (privacy and perplexity analysis).

For one dataset and budget, `training_sets` reads every method's training set from the study folder
(`studies/variants/<dataset>/<method>/trainset-n<N>-g<G>.jsonl`, real subsets `...-s<S>.jsonl`). Then, per method:

* perplexity: each text's mean token NLL (nats) under an LM, beside the real generation pool ("real_pool") and
  the dev split ("real_holdout"); optionally also given the class instruction that LM generation decodes after;
* leakage: exact-match and n-gram overlap with the pool, and MiniLM nearest-neighbour similarity to the pool,
  each beside the same number of held-out real texts (gradmm.experiments.privacy_metrics); the real subsets (random_real, herding,
  kcenter, full_real) are pool texts, so they mark what total leakage looks like;
* diversity: distinct-1/2 and self-BLEU (gradmm.experiments.diversity); the real subsets give the same-size real reference.

`write_text_report` writes reports/tables/{perplexity,perplexity_texts,privacy}.csv and
reports/figures/{perplexity,privacy}.png; notebooks/02_privacy_perplexity.ipynb calls these functions.
"""

import math
import random
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gradmm.config import read_params
from gradmm.core.perplexity import log_perplexity
from gradmm.experiments.diversity import distinct_n, self_bleu
from gradmm.experiments.privacy_metrics import leakage_vs_holdout, nearest_neighbour_similarity
from gradmm.io.records import read_jsonl
from gradmm.methods import registry
from gradmm.methods.features import minilm_embeddings
from gradmm.methods.prompts import instruction, instruction_ids
from gradmm.methods.registry import ordered_methods

NO_TEXTS = ("zero_shot",)  # no training set
REFERENCES = ["real_pool", "real_holdout"]


def training_sets(study_dir, dataset: str, n_per_class: int, methods=None, generation_seed: int = 0,
                  seed: int = 0) -> dict[str, list[dict]]:
    """{method: rows} of every method (or of `methods`) with a training set in study_dir/dataset, in the report's
    method order; methods without the file, and zero_shot, are skipped."""
    folder = Path(study_dir) / dataset
    names = methods if methods is not None else [p.name for p in folder.glob("*") if p.is_dir()]
    out = {}
    for m in ordered_methods(n for n in names if n not in NO_TEXTS):
        path = folder / m / (f"trainset-n{n_per_class}-s{seed}.jsonl" if registry.get(m).per_seed_set
                             else f"trainset-n{n_per_class}-g{generation_seed}.jsonl")
        rows = read_jsonl(path) if path.is_file() else []
        if rows:
            out[m] = rows
    if not out:
        raise FileNotFoundError(f"no training set for n_per_class={n_per_class} (generation seed {generation_seed}, "
                                f"seed {seed}) under {folder}: run `gradmm study` first")
    return out


def _with_references(task, sets: dict) -> dict[str, list[dict]]:
    real = {"real_pool": task.pool, "real_holdout": task.dev}
    return {**{k: [{"text": ex.text, "label": ex.label} for ex in v] for k, v in real.items()}, **sets}


@torch.no_grad()
def _log_ppl(model, ids: list[list[int]], prefix: list[int] | None, pad: int, batch_size: int, bar) -> list[float]:
    """Mean NLL of each id list (right-padded batches of similar length); nan where no token is scored."""
    out = [math.nan] * len(ids)
    order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: len(ids[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        width = max(len(ids[i]) for i in idx)
        batch = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in idx])
        mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in idx])
        for i, v in zip(idx, log_perplexity(model, batch, prefix_ids=prefix, mask=mask, batch_size=len(idx)).tolist()):
            out[i] = v
        bar.update(len(idx))
    return out


def perplexity_rows(model, tokenizer, task, sets: dict[str, list[dict]], model_name: str, conditioned: bool = False,
                    batch_size: int = 16, max_tokens: int = 256, progress: bool = True) -> list[dict]:
    """One row per text of each set, of the pool ("real_pool") and of the dev split ("real_holdout"): dataset,
    method, label, model, n_tokens, log_perplexity = mean token NLL (nats) of the text (first max_tokens tokens).

    Unconditioned, the text follows the model's BOS token when it has one; without a BOS its first token has no
    context and is not scored (a one-token text then gives nan; an empty text always does). conditioned=True adds
    log_perplexity_conditioned: the NLL given the class instruction prefix that LM generation decodes after
    (gradmm.methods.prompts.instruction_ids), i.e. how natural the text is as an answer for its label.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for method, part in _with_references(task, sets).items():
        ids = [tokenizer(r["text"], add_special_tokens=False).input_ids[:max_tokens] for r in part]
        total = len(ids) * (1 + conditioned)
        with tqdm(total=total, desc=f"log-ppl {method}", disable=not progress, leave=False) as bar:
            plain = _log_ppl(model, ids, None, pad, batch_size, bar)
            cond = [math.nan] * len(ids)
            for c in sorted({int(r["label"]) for r in part}) if conditioned else []:
                idx = [i for i, r in enumerate(part) if int(r["label"]) == c]
                prefix = instruction_ids(tokenizer, task, instruction(task, c))
                for i, v in zip(idx, _log_ppl(model, [ids[i] for i in idx], prefix, pad, batch_size, bar)):
                    cond[i] = v
        for r, t, p, q in zip(part, ids, plain, cond):
            row = {"dataset": task.name, "method": method, "label": int(r["label"]), "model": model_name,
                   "n_tokens": len(t), "log_perplexity": p}
            rows.append({**row, "log_perplexity_conditioned": q} if conditioned else row)
    return rows




def leakage_rows(task, sets: dict[str, list[dict]], holdout_size: int | None = None, seed: int = 0,
                 ns=(4, 8)) -> list[dict]:
    """Per method: gradmm.experiments.privacy_metrics.leakage_vs_holdout of its texts against the pool, the holdout being a seeded
    random sample of task.dev of the set's size (or holdout_size; at most all of dev), and the MiniLM cosine
    similarity of each text to its nearest pool text, mean and 95th percentile, for the set and the holdout."""
    pool = [ex.text for ex in task.pool]
    pool_emb = minilm_embeddings(pool)  # once for every method
    rows = []
    for method, part in sets.items():
        texts = [r["text"] for r in part]
        size = min(holdout_size or len(texts), len(task.dev))
        holdout = [ex.text for ex in random.Random(seed).sample(task.dev, size)]
        row = {"dataset": task.name, "method": method, "n_texts": len(texts), "holdout_size": len(holdout),
               **leakage_vs_holdout(texts, pool, holdout, ns)}
        for side, t in (("synthetic", texts), ("holdout", holdout)):
            sim = nearest_neighbour_similarity(minilm_embeddings(t), pool_emb)
            row[f"nn_sim_mean_{side}"], row[f"nn_sim_p95_{side}"] = float(sim.mean()), float(np.quantile(sim, 0.95))
        rows.append(row)
    return rows


def diversity_rows(sets: dict[str, list[dict]], dataset: str | None = None, max_texts: int = 200,
                   seed: int = 0) -> list[dict]:
    """Per method: distinct-1, distinct-2 and self-BLEU (on a seeded sample of max_texts texts: it is quadratic;
    nan for a single text). Both depend on the set's size: compare sets of one budget. `dataset` (task.name)
    is the key write_text_report joins these rows to leakage_rows' on."""
    rows = []
    for method, part in sets.items():
        texts = [r["text"] for r in part]
        sample = random.Random(seed).sample(texts, max_texts) if len(texts) > max_texts else texts
        rows.append({"dataset": dataset, "method": method, "distinct_1": distinct_n(texts, 1),
                     "distinct_2": distinct_n(texts, 2),
                     "self_bleu": self_bleu(sample) if len(sample) > 1 else math.nan})
    return rows












def settings_from_params(params_file, datasets=None, n_per_class=None, model=None) -> tuple[list[str], int, str]:
    """The notebook's None parameters from params.yaml: study.datasets, the first study budget, model.name."""
    params = read_params(params_file) if Path(params_file).is_file() else {}
    study = params.get("study") or {}
    datasets = datasets or study.get("datasets")
    n_per_class = n_per_class or (study.get("n_per_class") or [None])[0]
    model = model or (params.get("model") or {}).get("name")
    missing = [k for k, v in (("datasets", datasets), ("n_per_class", n_per_class), ("model", model)) if not v]
    if missing:
        raise ValueError(f"{missing} given neither as notebook parameters nor in {params_file} (study / model sections)")
    return list(datasets), int(n_per_class), model
