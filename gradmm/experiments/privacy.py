"""Privacy attacks on the pipeline's outputs, for one dataset (privacy and perplexity analysis, issue 6).

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

`gradmm privacy-attacks` runs them; `attack_tables` gathers every dataset's files for the notebook.
"""

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gradmm.core.data import Example
from gradmm.io.records import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


@dataclass
class PrivacyConfig:
    datasets: list[str] = field(default_factory=lambda: ["rtpolarity"])
    n_per_class: int = 10  # the study budget whose training sets are attacked
    methods: list[str] = field(default_factory=lambda: ["random_real", "llm_zero_shot_gen", "gradmm"])
    attack_lr: float = 5.0e-5  # one fine-tuning run per attacked set (no dev search: the attacker's model)
    attack_seed: int = 0
    members: int = 100  # pool members attacked against as many dev non-members (at most the smaller split)
    canaries: int = 4  # canary sentences added to the generation pool
    canary_repeats: int = 1  # copies of each
    canary_alternatives: int = 999  # random secrets each canary is ranked among (|R| = this + 1)
    canary_method: str = "gradmm"  # the GRADMM variant that generates from the canaried pool
    epsilons: list[float] = field(default_factory=lambda: [10.0, 1.0, 0.05])  # DP sweep; ∞ = the study's gradmm
    dp_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds per ε
    second_model: str = ""  # the report's second perplexity scorer (notebook 02); '' = none


def check_privacy(cfg: PrivacyConfig) -> None:
    from gradmm.methods.trainsets import GENERATORS
    from gradmm.experiments.variants import STUDY_BASELINES

    allowed = list(STUDY_BASELINES) + list(GENERATORS)
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
    from gradmm.methods.finetune import train_copy
    from gradmm.experiments.privacy_metrics import (attack_metrics, loss_attack_scores, per_example_losses,
                                reference_attack_scores)

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
    from gradmm.experiments.privacy_metrics import make_canaries

    canaries = make_canaries(cfg.canaries, seed)
    extra = [Example(c.text, i % task.n_classes) for i, c in enumerate(canaries) for _ in range(cfg.canary_repeats)]
    return dataclasses.replace(task, pool=list(task.pool) + extra), canaries


def canary_exposures(models: dict, tokenizer, canaries, n_alternatives: int, seed: int = 0) -> list[dict]:
    """Exposure of every canary's secret under each of `models` ({name: model}), the same alternatives for all."""
    from gradmm.experiments.privacy_metrics import canary_exposure, random_secrets

    secrets = [c.secret for c in canaries]
    alternatives = random_secrets(n_alternatives, seed + 7, len(secrets[0]), exclude=secrets)
    return [{"model": name, "secret": c.secret, "exposure": canary_exposure(m, tokenizer, c.prefix, c.secret, alternatives),
             "max_exposure": math.log2(n_alternatives + 1)} for name, m in models.items() for c in canaries]


# --------------------------------------------------------------------------------------------------
# Orchestration of one dataset
def run_attacks(task, cfg: PrivacyConfig, study_cfg, params_file: str, model_cfg, ft_cfg, filter_cfg, exp_cfg,
                study_dir: Path, out: Path, progress: bool = True) -> dict:
    """Membership inference, canaries and the DP sweep for one dataset; each part resumes from its files."""
    from gradmm.core.admm import GenerateConfig, check_config
    from gradmm.config import load_config
    from gradmm.methods.filtering import FilterConfig, filter_rows
    from gradmm.methods.finetune import train_copy
    from gradmm.config import as_dict
    from gradmm.methods.generate import DPConfig, generate, task_fingerprint
    from gradmm.core.models import load_model
    from gradmm.experiments.variants import method_overrides, run_cell
    from gradmm.experiments.text_stats import training_sets

    check_privacy(cfg)
    out = Path(out)
    sets = training_sets(study_dir, task.name, cfg.n_per_class, cfg.methods)  # fails now if the study is missing
    missing = [m for m in cfg.methods if m not in sets]
    if missing:
        raise FileNotFoundError(f"no n={cfg.n_per_class} training set of {missing} under {study_dir}/{task.name}: "
                                "run those study cells first")
    gen = load_config(GenerateConfig, "generate", params_file, method_overrides(cfg.canary_method, study_cfg, 0))
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
        fcfg = FilterConfig(**{**as_dict(filter_cfg), "n_per_class": cfg.n_per_class})
        kept, _ = filter_rows(model, tok, ctask, raw, fcfg, private=False, progress=progress)
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
    return attack_tables(out.parent, study_dir)


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


def attack_tables(privacy_dir, study_dir) -> dict[str, pd.DataFrame]:
    """membership, canaries (one row per canary and model) and dp_sweep tables of every dataset folder found."""
    member, canary, sweep = [], [], []
    for d in sorted(p for p in Path(privacy_dir).glob("*") if p.is_dir()):
        if (d / "membership.json").is_file():
            member += read_json(d / "membership.json")["rows"]
        if (d / "canaries" / "exposure.json").is_file():
            c = read_json(d / "canaries" / "exposure.json")
            canary += [{**{k: v for k, v in c.items() if k not in ("exposures", "settings")}, **e} for e in c["exposures"]]
        results = sorted(d.glob("dp-eps*/result-*.json"))
        if results:
            sweep += dp_sweep_rows(privacy_dir, study_dir, d.name, read_json(results[0])["n_per_class"])
    return {"membership": pd.DataFrame(member), "canaries": pd.DataFrame(canary), "dp_sweep": pd.DataFrame(sweep)}


def dp_sweep_leakage(task, sweep: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Leakage (gradmm.experiments.text_stats.leakage_rows) of each ε's training set; one row per ε."""
    from gradmm.experiments.text_stats import leakage_rows

    sets = {f"eps={e:g}": read_jsonl(f) for e, f in sweep.drop_duplicates("epsilon")[["epsilon", "train_file"]]
            .itertuples(index=False)}
    rows = leakage_rows(task, sets, seed=seed)
    for r in rows:
        r["epsilon"] = float(r.pop("method")[len("eps="):])
    return pd.DataFrame(rows)


def dp_sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    g = sweep.groupby(["dataset", "epsilon"])
    return pd.DataFrame({"runs": g.size(), "accuracy_mean": g.accuracy.mean(), "accuracy_std": g.accuracy.std(),
                         "snr": g.snr.first()}).reset_index().sort_values(["dataset", "epsilon"], ascending=[True, False])


def plot_dp_sweep(summary: pd.DataFrame, path_png):
    """Accuracy (mean ± std) and target SNR against ε, ε = ∞ drawn at the right edge."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    a1, a2 = fig.subplots(1, 2)
    for d, part in summary.groupby("dataset"):
        finite = part[np.isfinite(part.epsilon)]
        x_inf = finite.epsilon.max() * 10 if len(finite) else 1.0
        x = part.epsilon.where(np.isfinite(part.epsilon), x_inf)
        a1.errorbar(x, 100 * part.accuracy_mean, yerr=100 * part.accuracy_std.fillna(0), marker="o", capsize=3, label=d)
        a2.plot(x[np.isfinite(part.snr)], part.snr[np.isfinite(part.snr)], marker="o", label=d)
    for ax, ylabel in ((a1, "test accuracy (%)"), (a2, "target SNR (clean / noise norm)")):
        ax.set_xscale("log")
        ax.set(xlabel="ε (rightmost point of the accuracy panel: no DP)", ylabel=ylabel)
        ax.legend(fontsize=8)
    a2.set_yscale("log")
    fig.tight_layout()
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
    return fig


def membership_summary(member: pd.DataFrame) -> pd.DataFrame:
    return member.pivot_table(index=["dataset", "method", "n_train"], columns="attack",
                              values=["auc", "tpr_at_1pct_fpr"]).round(3)


def canary_summary(canary: pd.DataFrame) -> pd.DataFrame:
    g = canary.groupby(["dataset", "model"])
    return pd.DataFrame({"canaries": g.size(), "exposure_mean": g.exposure.mean(), "exposure_max": g.exposure.max(),
                         "max_possible": g.max_exposure.first(), "secrets_in_raw_texts": g.secrets_in_raw_texts.first(),
                         "secrets_in_training_set": g.secrets_in_training_set.first()}).reset_index()



def write_attack_report(tables: dict[str, pd.DataFrame], tasks: dict, reports_dir="reports") -> dict[str, pd.DataFrame]:
    """tables/membership.csv, tables/canaries.csv (summary per model), tables/dp_sweep.csv (accuracy, SNR and
    leakage per ε) and figures/dp_sweep.png, for whatever parts `tables` holds; `tasks` = {dataset: Task}."""
    folder, out = Path(reports_dir) / "tables", {}
    folder.mkdir(parents=True, exist_ok=True)
    if len(tables["membership"]):
        out["membership"] = tables["membership"]
    if len(tables["canaries"]):
        out["canaries"] = canary_summary(tables["canaries"])
    sweep = tables["dp_sweep"]
    if len(sweep):
        leak = [dp_sweep_leakage(tasks[d], part) for d, part in sweep.groupby("dataset") if d in tasks]
        summ = dp_sweep_summary(sweep)
        out["dp_sweep"] = summ.merge(pd.concat(leak), on=["dataset", "epsilon"], how="left") if leak else summ
        plot_dp_sweep(out["dp_sweep"], Path(reports_dir) / "figures" / "dp_sweep.png")
    for name, df in out.items():
        df.round(4).to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")
    return out
