"""Privacy attacks on the pipeline's outputs, for one dataset (the privacy and perplexity analysis).

Three measurements, each resumable (a finished part is a file under `--out` and is never redone):

* membership inference (`membership.json`): a copy of the LM is fine-tuned on each attacked training set of the
  variants study (and on the whole generation pool, `full_real`, the reference where the pool *is* the training
  data); the loss and the reference-calibrated attacks (gradmm.experiments.privacy_metrics) then tell pool members from as many dev
  non-members, as ROC AUC and TPR at 1 % FPR;
* canaries (`canaries/`): unique "my secret code is <digits> ..." sentences are added to the generation pool,
  GRADMM generates from it, and we count secrets in the synthetic texts and measure each secret's exposure
  (its rank among random alternatives) under the base model, a model fine-tuned on the synthetic set and one
  fine-tuned on the canaried pool;
* the DP sweep (`dp-eps<ε>/`): `gradmm_dp` cells of the study at each ε (ε = ∞ is the study's own `gradmm`
  cell): test accuracy, the target's signal-to-noise ratio and the leakage of the texts.

`gradmm privacy-attacks` runs them; `gradmm.reporting.privacy.attack_tables` gathers every dataset's files for the
notebook.
"""

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from gradmm.config import DPConfig, GenerateConfig, PrivacyConfig, as_dict, load_config, read_params
from gradmm.core.admm import check_config
from gradmm.core.data import Example
from gradmm.core.models import load_model
from gradmm.experiments.privacy_metrics import (
    attack_metrics,
    canary_exposure,
    loss_attack_scores,
    make_canaries,
    per_example_losses,
    random_secrets,
    reference_attack_scores,
)
from gradmm.experiments.text_stats import leakage_rows, training_sets
from gradmm.experiments.variants import method_overrides, run_cell
from gradmm.io.records import read_json, read_jsonl, write_json, write_jsonl
from gradmm.methods import registry
from gradmm.methods.finetune import train_copy
from gradmm.methods.generate import generate, task_fingerprint
from gradmm.methods.registry import GENERATORS
from gradmm.methods.trainsets import make_trainset

log = logging.getLogger(__name__)


def check_privacy(cfg: PrivacyConfig) -> None:
    allowed = registry.names(in_studies=True)
    bad = [m for m in cfg.methods if m not in allowed or m == "zero_shot"]
    if bad:
        raise ValueError(f"privacy.methods {bad}: use methods with a training set, any of {allowed[1:]}")
    if cfg.canary_method not in GENERATORS or GENERATORS[cfg.canary_method].get("dp"):
        raise ValueError(f"privacy.canary_method {cfg.canary_method!r}: use a non-DP GRADMM variant of {list(GENERATORS)}")
    for key in ("n_per_class", "members", "canaries", "canary_repeats", "canary_alternatives"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"privacy.{key} must be ≥ 1, got {getattr(cfg, key)}")
    bad_eps = [e for e in cfg.epsilons if not (isinstance(e, (int, float)) and 0 < e < math.inf)]
    if bad_eps or not cfg.dp_seeds:
        raise ValueError(f"privacy.epsilons must be finite numbers > 0 (∞ is the study's gradmm cell), got {bad_eps}; "
                         f"privacy.dp_seeds must not be empty")
    if not cfg.attack_lr > 0:
        raise ValueError(f"privacy.attack_lr must be > 0, got {cfg.attack_lr}")


def _stored(path: Path, settings: dict):
    """The JSON at `path` if it was written with these settings, else None (to be redone)."""
    if not path.is_file():
        return None
    blob = read_json(path)
    return blob if blob.get("settings") == json.loads(json.dumps(settings)) else None


def _examples(rows) -> list[Example]:
    return [Example(r["text"], int(r["label"])) for r in rows]


# --------------------------------------------------------------------------------------------------
# Membership inference against fine-tuned models
def membership_rows(model, tokenizer, task, sets: dict[str, list[dict]], ft_cfg, lr: float, seed: int,
                    members: int, progress: bool = True) -> list[dict]:
    """Loss and reference attacks on a copy of `model` fine-tuned on each set (plus `full_real`, the pool)."""
    size = min(members, len(task.pool), len(task.dev))
    inside, outside = task.pool[:size], task.dev[:size]  # dev: never seen by the generator nor by fine-tuning

    def losses(m):
        return (per_example_losses(m, tokenizer, inside, task.template, progress=progress),
                per_example_losses(m, tokenizer, outside, task.template, progress=progress))

    ref_in, ref_out = losses(model)
    rows = []
    for name, part in {"full_real": [{"text": e.text, "label": e.label} for e in task.pool], **sets}.items():
        target, _ = train_copy(model, tokenizer, _examples(part), task.template, ft_cfg, lr, seed, progress)
        t_in, t_out = losses(target)
        del target
        scores = {"loss": (loss_attack_scores(t_in), loss_attack_scores(t_out)),
                  "reference": (reference_attack_scores(t_in, ref_in), reference_attack_scores(t_out, ref_out))}
        for attack, (s_in, s_out) in scores.items():
            rows.append({"dataset": task.name, "method": name, "attack": attack, "n_train": len(part),
                         "members": size, **attack_metrics(s_in, s_out)})
    return rows


# --------------------------------------------------------------------------------------------------
# Canaries
def canaried_task(task, cfg: PrivacyConfig, seed: int = 0):
    """(task with the canaries appended to its pool, canaries); canary i gets class i mod n_classes."""
    canaries = make_canaries(cfg.canaries, seed)
    extra = [Example(c.text, i % task.n_classes) for i, c in enumerate(canaries) for _ in range(cfg.canary_repeats)]
    return dataclasses.replace(task, pool=list(task.pool) + extra), canaries


def canary_exposures(models: dict, tokenizer, canaries, n_alternatives: int, seed: int = 0) -> list[dict]:
    """Exposure of every canary's secret under each of `models` ({name: model}), the same alternatives for all."""
    secrets = [c.secret for c in canaries]
    alternatives = random_secrets(n_alternatives, seed + 7, len(secrets[0]), exclude=secrets)
    return [{"model": name, "secret": c.secret, "exposure": canary_exposure(m, tokenizer, c.prefix, c.secret, alternatives),
             "max_exposure": math.log2(n_alternatives + 1)} for name, m in models.items() for c in canaries]


# --------------------------------------------------------------------------------------------------
# Orchestration of one dataset
def run_attacks(task, cfg: PrivacyConfig, study_cfg, params_file: str, model_cfg, ft_cfg, filter_cfg, exp_cfg,
                study_dir: Path, out: Path, progress: bool = True) -> dict:
    """Membership inference, canaries and the DP sweep for one dataset; each part resumes from its files."""
    check_privacy(cfg)
    out = Path(out)
    sets = training_sets(study_dir, task.name, cfg.n_per_class, cfg.methods)  # fails now if the study is missing
    missing = [m for m in cfg.methods if m not in sets]
    if missing:
        raise FileNotFoundError(f"no n={cfg.n_per_class} training set of {missing} under {study_dir}/{task.name}: "
                                "run those study cells first")
    overrides = method_overrides(cfg.canary_method, study_cfg, 0, read_params(params_file))
    gen = load_config(GenerateConfig, "generate", params_file, overrides)
    check_config(gen)
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)

    # A finished part is kept only while the settings it was made with hold (they are stored beside it).
    fine_tune = {"finetune": as_dict(ft_cfg), "lr": cfg.attack_lr, "seed": cfg.attack_seed, "n_per_class": cfg.n_per_class}
    settings = {**fine_tune, "task": task_fingerprint(task), "methods": list(cfg.methods), "members": cfg.members}
    if _stored(out / "membership.json", settings) is None:
        rows = membership_rows(model, tok, task, sets, ft_cfg, cfg.attack_lr, cfg.attack_seed, cfg.members, progress)
        write_json(out / "membership.json", {"settings": settings, "rows": rows})

    settings = {**fine_tune, "task": task_fingerprint(task), "generate": as_dict(gen), "filter": as_dict(filter_cfg),
                **{k: getattr(cfg, k) for k in ("canaries", "canary_repeats", "canary_alternatives", "canary_method")}}
    if _stored(out / "canaries" / "exposure.json", settings) is None:
        ctask, canaries = canaried_task(task, cfg)
        dp = DPConfig()  # off: the canary run measures what the non-private generator lets through
        generate(ctask, model_cfg, gen, dp, out / "canaries" / "generated", progress=progress, archive_stale=True)
        raw = read_jsonl(out / "canaries" / "generated" / "raw.jsonl")
        kept, _ = make_trainset(cfg.canary_method, model, tok, ctask, None, 0, filter_cfg, progress, raw=raw,
                                n=cfg.n_per_class)
        write_jsonl(out / "canaries" / "trainset.jsonl", kept)
        models = {"base": model}
        for name, part in (("finetuned_on_synthetic", kept), ("finetuned_on_canaried_pool", ctask.pool)):
            rows = part if isinstance(part[0], dict) else [{"text": e.text, "label": e.label} for e in part]
            models[name], _ = train_copy(model, tok, _examples(rows), task.template, ft_cfg, cfg.attack_lr,
                                         cfg.attack_seed, progress)
        texts = [r["text"] for r in raw]
        result = {"dataset": task.name, "method": cfg.canary_method, "canaries": len(canaries),
                  "repeats": cfg.canary_repeats, "pool_size": len(ctask.pool),
                  "secrets_in_raw_texts": sum(any(c.secret in t for t in texts) for c in canaries),
                  "secrets_in_training_set": sum(any(c.secret in r["text"] for r in kept) for c in canaries),
                  "exposures": canary_exposures(models, tok, canaries, cfg.canary_alternatives)}
        del models
        write_json(out / "canaries" / "exposure.json", {**result, "settings": settings})

    sweep_cfg = dataclasses.replace(study_cfg, n_per_class=[cfg.n_per_class], seeds=list(cfg.dp_seeds))
    for eps in cfg.epsilons:
        run_cell(task, "gradmm_dp", sweep_cfg, params_file, model_cfg, ft_cfg, filter_cfg, exp_cfg,
                 out / f"dp-eps{eps:g}", overrides=[f"dp.epsilon={eps}"], progress=progress)


# --------------------------------------------------------------------------------------------------
# Tables
def _generated_snr(cell: Path) -> float:
    metrics = read_json(cell / "generated-g0" / "generate_metrics.json")
    snrs = [c["snr"] for c in metrics["classes"] if c.get("snr") is not None]
    return float(np.mean(snrs)) if snrs else math.inf


def dp_sweep_rows(privacy_dir: Path, study_dir: Path, dataset: str, n_per_class: int) -> list[dict]:
    """One row per ε and fine-tuning seed (ε = inf: the study's gradmm cell), with the target SNR and leakage."""
    cells = [(math.inf, Path(study_dir) / dataset / "gradmm")]
    cells += sorted(((float(p.name[len("dp-eps"):]), p) for p in (Path(privacy_dir) / dataset).glob("dp-eps*")),
                    reverse=True)
    rows = []
    for eps, cell in cells:
        for f in sorted(cell.glob(f"result-n{n_per_class}-g0-s*.json")):
            r = read_json(f)
            rows.append({"dataset": dataset, "epsilon": eps, "seed": r["seed"], "accuracy": r["test_accuracy"],
                         "dev_accuracy": r.get("dev_accuracy"), "n_train": r["n_train"], "snr": _generated_snr(cell),
                         "train_file": str(cell / r["train_file"])})
    return rows




def dp_sweep_leakage(task, sweep: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Leakage (gradmm.experiments.text_stats.leakage_rows) of each ε's training set; one row per ε."""
    sets = {f"eps={e:g}": read_jsonl(f) for e, f in sweep.drop_duplicates("epsilon")[["epsilon", "train_file"]]
            .itertuples(index=False)}
    rows = leakage_rows(task, sets, seed=seed)
    for r in rows:
        r["epsilon"] = float(r.pop("method")[len("eps="):])
    return pd.DataFrame(rows)










