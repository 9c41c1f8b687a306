"""The transfer study: training sets written with one LM fine-tune other models.

The source sets are the variants study's (`studies/variants/<dataset>/<method>/trainset-n<N>-g<G>.jsonl`, written by
the study's model, SmolLM2 by default). Each target then learns from them at the same budget, beside its own
baselines built from the real pool (random_real, herding, kcenter, full_real) and, for a causal LM, its own
in-context zero_shot / few_shot. Targets:

* a causal LM known to `gradmm.core.models` (e.g. gemma3-270m): fine-tuned with the label-word loss, LR on dev;
* `minilm`: a linear probe, the frozen MiniLM sentence encoder with a logistic-regression head (C on dev).
  It is deterministic, so a fixed training set gets one run; only the real subsets vary with the seed.

One cell = dataset × target × method, `<out>/result-s<S>.json` per seed, resumable like the study's cells.
"""

import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from gradmm.config import (
    PROBE,
    ExperimentConfig,
    FinetuneConfig,
    ModelConfig,
    TransferConfig,
    as_dict,
    build,
    load_config,
)
from gradmm.core.models import check_model_name, load_model
from gradmm.core.scoring import prediction_shares
from gradmm.io.records import read_json, read_text_rows, write_json
from gradmm.io.worksharing import claimed_run_dir
from gradmm.methods import registry
from gradmm.methods.features import minilm_embeddings
from gradmm.methods.finetune import check_config
from gradmm.methods.generate import task_fingerprint
from gradmm.methods.trainsets import evaluate_method, make_trainset

log = logging.getLogger(__name__)

IN_CONTEXT = tuple(registry.names("in_context"))
REAL = tuple(registry.names("real"))


def check_transfer(cfg: TransferConfig) -> None:
    allowed = registry.names(filtered=True)
    bad = [m for m in cfg.methods if m not in allowed]
    if bad:
        raise ValueError(f"transfer.methods {bad} unknown: use any of {allowed}")
    for t in cfg.targets:
        if t != PROBE:
            check_model_name(t)
    if cfg.n_per_class < 1 or not cfg.seeds or not cfg.targets:
        raise ValueError(f"transfer.n_per_class must be ≥ 1 (got {cfg.n_per_class}); seeds and targets non-empty")
    if not cfg.probe_c or min(cfg.probe_c) <= 0:
        raise ValueError(f"transfer.probe_c must list C values > 0, got {cfg.probe_c}")
    bad = [k for k in cfg.finetune if k not in FinetuneConfig.__dataclass_fields__]
    if bad:
        raise ValueError(f"transfer.finetune keys {bad} are not finetune params: use {sorted(FinetuneConfig.__dataclass_fields__)}")


def settings(params_file, overrides=(), **chosen):
    """(TransferConfig, ModelConfig, FinetuneConfig) from the params file; `chosen` (e.g. the notebook's
    parameters) replaces transfer keys where not None."""
    cfg = load_config(TransferConfig, "transfer", params_file, overrides)
    cfg = build(TransferConfig, {**as_dict(cfg), **{k: v for k, v in chosen.items() if v is not None}}, "transfer")
    check_transfer(cfg)
    ft = load_config(FinetuneConfig, "finetune", params_file,
                     [f"finetune.{k}={json.dumps(v)}" for k, v in cfg.finetune.items()] + list(overrides))
    check_config(ft)
    return cfg, load_config(ModelConfig, "model", params_file, overrides), ft


def source_set(study_cell: Path, n_per_class: int, generation_seed: int) -> tuple[list[dict], str]:
    """(rows, source model name) of a generating method's study training set."""
    path = Path(study_cell) / f"trainset-n{n_per_class}-g{generation_seed}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the study cell `gradmm study --method {Path(study_cell).name}` first")
    source = read_json(Path(study_cell) / "run_config.json")["model"]["name"]
    return read_text_rows(path), source


def real_set(method: str, task, n_per_class: int, seed: int) -> list[dict]:
    """A real subset of the pool, built as the classification experiment builds it (MiniLM coresets)."""
    cfg = ExperimentConfig(n_per_class=n_per_class, coreset_features="minilm")  # model-free: no target features
    return make_trainset(method, None, None, task, cfg, seed, progress=False)[0]


def _minilm_cached(texts) -> np.ndarray:
    return _minilm_tuple(tuple(texts))


@functools.lru_cache(maxsize=8)  # dev and test of a task are embedded once per process, not once per run
def _minilm_tuple(texts: tuple) -> np.ndarray:
    return minilm_embeddings(list(texts)).numpy()


def probe_result(train: list[dict], task, c_grid, embed=None) -> dict:
    """Frozen MiniLM + logistic regression: C picked on dev, accuracy on test. `embed(texts)` → (N, d) array."""
    from sklearn.linear_model import LogisticRegression  # heavy: imported where used, not at every CLI start

    if not train:  # nothing to fit: no accuracy (reported as an empty set, as gradmm.methods.trainsets does)
        return {"test_accuracy": None, "dev_accuracy": None, "best_c": None, "dev_accuracies": {},
                "test_prediction_shares": None, "n_train": 0, "finetuned": False, "empty_trainset": True}
    embed = embed or _minilm_cached
    y = np.array([int(r["label"]) for r in train])
    x = embed([r["text"] for r in train])
    splits = {s: (embed([ex.text for ex in getattr(task, s)]), np.array([ex.label for ex in getattr(task, s)]))
              for s in ("dev", "test")}
    if len(set(y)) < 2:  # one class: the head can only predict it
        only = int(y[0])
        preds = {s: np.full(len(v[1]), only) for s, v in splits.items()}
        best_c, devs = None, {}
    else:
        devs, fits = {}, {}
        for c in sorted(c_grid):
            fits[c] = LogisticRegression(C=c, max_iter=2000).fit(x, y)
            devs[c] = float((fits[c].predict(splits["dev"][0]) == splits["dev"][1]).mean())
        best_c = max(devs, key=lambda c: (devs[c], -c))  # a tie keeps the smaller C (stronger regularisation)
        preds = {s: fits[best_c].predict(v[0]) for s, v in splits.items()}
    acc = {s: float((preds[s] == splits[s][1]).mean()) for s in splits}
    return {"test_accuracy": acc["test"], "dev_accuracy": acc["dev"], "best_c": best_c,
            "dev_accuracies": {str(c): a for c, a in devs.items()},
            "test_prediction_shares": prediction_shares(torch.as_tensor(preds["test"]), task.n_classes),
            "n_train": len(train), "finetuned": True}


def run_target(task, target: str, cfg: TransferConfig, study_dir: Path, model_cfg, ft_cfg, out: Path,
               progress: bool = True) -> list[dict]:
    """Every method of cfg for one dataset × target (`out/<method>/`); the probe skips in-context methods.
    Every source set is checked before any model loads."""
    check_transfer(cfg)
    methods = [m for m in cfg.methods if not (target == PROBE and m in IN_CONTEXT)]
    for m in methods:
        if m not in IN_CONTEXT + REAL:
            source_set(Path(study_dir) / task.name / m, cfg.n_per_class, cfg.generation_seed)
    loaded = {}  # the target model, loaded once for every method
    return [r for m in methods
            for r in run_cell(task, target, m, cfg, study_dir, model_cfg, ft_cfg, Path(out) / m, progress, loaded)]


def run_cell(task, target: str, method: str, cfg: TransferConfig, study_dir: Path, model_cfg, ft_cfg,
             out: Path, progress: bool = True, loaded: dict | None = None) -> list[dict]:
    """Run (or resume) one dataset × target × method cell; returns its results. `loaded` caches the model."""
    check_transfer(cfg)
    if target == PROBE and method in IN_CONTEXT:
        raise ValueError(f"{method} is in-context learning: the {PROBE} probe has no prompt, use another method")
    out = Path(out)
    fixed = method not in ("random_real", "herding", "kcenter", "few_shot")  # seeds only change the data order
    source, rows, loaded = None, None, {} if loaded is None else loaded
    if method not in IN_CONTEXT + REAL:
        rows, source = source_set(Path(study_dir) / task.name / method, cfg.n_per_class, cfg.generation_seed)
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    params = {"task": task_fingerprint(task), "target": target, "method": method, "n_per_class": cfg.n_per_class,
              "source": source, "source_set_sha256": digest,
              "train": {"probe_c": list(cfg.probe_c)} if target == PROBE else as_dict(ft_cfg)}
    with claimed_run_dir(out, params, archive_stale=True):
        seeds = cfg.seeds[:1] if method == "zero_shot" or (target == PROBE and fixed) else cfg.seeds
        results = []
        for s in seeds:
            path = out / f"result-s{s}.json"
            if path.is_file():
                results.append(read_json(path))
                continue
            train = rows if source else real_set(method, task, cfg.n_per_class, s)
            start = time.perf_counter()
            if target == PROBE:
                result = probe_result(train, task, cfg.probe_c)
            else:
                if target not in loaded:
                    loaded.clear()  # one model in memory at a time
                    loaded[target] = load_model(target, model_cfg.device, model_cfg.dtype)
                result = evaluate_method(method, train, *loaded[target], task, ft_cfg, s, progress)
            result.update(dataset=task.name, target=target, source=source or "real", method=method,
                          n_per_class=cfg.n_per_class, seed=s, wall_seconds=round(time.perf_counter() - start, 1))
            write_json(path, result)
            log.info("%s → %s %s s=%d: test %s", task.name, target, method, s,
                     "EMPTY training set" if result.get("empty_trainset") else f"{result['test_accuracy']:.3f}")
            results.append(result)
        return results
















