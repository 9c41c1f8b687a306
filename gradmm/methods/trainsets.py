"""The one chain from a method name to its training set and its score, used by the CLI stages, the notebooks
and every study: `make_trainset` (a baseline's builder, or a GRADMM variant's raw texts through the filter) and
`evaluate_method` (in-context scoring, or fine-tuning with the learning rate picked on dev)."""

import logging
import time
from dataclasses import replace

from gradmm.config import ExperimentConfig, FilterConfig
from gradmm.core.data import Example, Task
from gradmm.core.scoring import accuracy, predict, prediction_shares
from gradmm.methods import registry
from gradmm.methods.baselines import SetRequest
from gradmm.methods.filtering import filter_rows
from gradmm.methods.finetune import finetune_and_evaluate
from gradmm.methods.registry import GENERATORS, check_method

log = logging.getLogger(__name__)


def check_experiment(cfg: ExperimentConfig) -> None:
    unknown = [g for g in cfg.generators if g not in GENERATORS]
    if unknown:
        raise ValueError(f"experiment.generators {unknown} unknown: use {sorted(GENERATORS)}")
    for m in list(cfg.baselines) + list(cfg.methods):
        check_method(m)
    if not budgets(cfg) or min(budgets(cfg)) < 1:
        raise ValueError(f"experiment.n_per_class must list budgets ≥ 1, got {cfg.n_per_class}")
    check_llm_draws(cfg)
    if cfg.coreset_features not in ("minilm", "lm"):
        raise ValueError(f"experiment.coreset_features {cfg.coreset_features!r}: use 'minilm' or 'lm'")


def check_llm_draws(cfg: ExperimentConfig) -> None:
    """The LM-text top-up needs room for at least one further draw."""
    if cfg.llm_consistent_per_class and cfg.llm_max_raw_per_class < 2 * cfg.llm_raw_per_class:
        raise ValueError(f"experiment.llm_max_raw_per_class ({cfg.llm_max_raw_per_class}) leaves no room for a further "
                         f"draw of llm_raw_per_class={cfg.llm_raw_per_class} texts: set it to at least "
                         f"{2 * cfg.llm_raw_per_class}, or llm_consistent_per_class to 0")


def budgets(cfg: ExperimentConfig) -> list[int]:
    """experiment.n_per_class as a list (a single number is a grid of one)."""
    n = cfg.n_per_class
    return [int(v) for v in n] if isinstance(n, (list, tuple)) else [int(n)]


def at_budget(cfg: ExperimentConfig, n: int | None = None) -> ExperimentConfig:
    """cfg for one stage call at budget n; None: the grid's only budget."""
    grid = budgets(cfg)
    if n is None:
        if len(grid) > 1:
            raise ValueError(f"experiment.n_per_class lists several budgets {grid}: pick one with --n-per-class")
        n = grid[0]
    if n < 1:
        raise ValueError(f"the budget n per class must be ≥ 1, got {n}")
    return replace(cfg, n_per_class=int(n))


def make_trainset(method: str, model, tokenizer, task: Task, experiment: ExperimentConfig | None, seed: int,
                  filter_cfg: FilterConfig | None = None, progress: bool = True, raw: list[dict] | None = None,
                  private: bool = False, n: int | None = None) -> tuple[list[dict], dict]:
    """The training set of `method` at the budget n per class and facts about how it was made: a baseline's
    rows from its builder ({"method", "seed", ...}), a GRADMM variant's from its raw texts (`raw`, a generation
    run's raw.jsonl rows) through the filter ({"filter": counts}; private: a DP run, whose filter may not look
    at real text). n defaults to experiment.n_per_class's only budget, or without an experiment section to
    the filter's n_per_class."""
    spec = registry.get(method)
    if n is None:
        n = at_budget(experiment).n_per_class if experiment else (filter_cfg or FilterConfig()).n_per_class
    if spec.generated:
        if raw is None:
            raise ValueError(f"{method} needs the raw texts of its generation run (gradmm generate)")
        cfg = replace(filter_cfg or FilterConfig(), n_per_class=n)
        if not spec.filtered:  # the same budget in generation order, no label check
            cfg = replace(cfg, label_filter=False, rank="none")
        rows, stats = filter_rows(model, tokenizer, task, raw, cfg, private=private, progress=progress)
        return rows, {"filter": stats}
    filter_cfg = replace(filter_cfg, n_per_class=n) if filter_cfg else None  # LM-text baselines keep n per class
    req = SetRequest(model, tokenizer, task, n, seed, experiment or ExperimentConfig(), filter_cfg, progress)
    rows, info = spec.build(req)
    return rows, {"method": method, "seed": seed, **info}


def evaluate_method(method: str, rows: list[dict], model, tokenizer, task: Task, finetune_cfg, seed: int,
                    progress: bool = True, log_metric=None) -> dict:
    """Test accuracy of a method: in-context for zero/few-shot, else fine-tuning with the LR picked on dev.

    log_metric(name, value, step): live fine-tuning metrics (finetune.finetune_and_evaluate)."""
    start = time.perf_counter()
    train = [Example(r["text"], int(r["label"])) for r in rows]
    finetuned = registry.get(method).finetuned
    if finetuned and not train:
        # A filter that kept nothing: no fine-tuned model, so no accuracy. The result says so (accuracy null,
        # empty_trainset) and the reports flag the cell, rather than failing a whole sweep or reporting the
        # base model's accuracy as the method's.
        log.warning("%s: the training set is empty (the filter kept nothing): no accuracy to report", method)
        result = {"test_accuracy": None, "test_prediction_shares": None, "dev_accuracy": None, "n_train": 0,
                  "finetuned": False, "empty_trainset": True}
    elif not finetuned:
        preds = predict(model, tokenizer, [ex.text for ex in task.test], task.template, train,
                        batch_size=finetune_cfg.eval_batch_size, progress=progress, desc=f"{method} test")
        result = {"test_accuracy": accuracy(preds, task.test),
                  "test_prediction_shares": prediction_shares(preds, task.n_classes), "n_train": len(train),
                  "finetuned": False}
    else:
        result = finetune_and_evaluate(model, tokenizer, train, task, finetune_cfg, seed, progress, log_metric)
        # per LR of the grid: its loss curve and time, for the MLflow run's step metrics (prediction shares stay out)
        result["lr_runs"] = [{"lr": r["lr"], "dev_accuracy": r["dev_accuracy"], "seconds": round(r["seconds"], 1),
                              "train_losses": [round(x, 4) for x in r["train_losses"]]} for r in result.pop("runs")]
        result["finetuned"] = True
    result.update(method=method, seed=seed, wall_seconds=round(time.perf_counter() - start, 1))
    return result
