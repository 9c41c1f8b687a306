"""The variants study (does matching the gradient add value?): GRADMM variants against LM-generated and real
text, at an equal budget.

One cell = one dataset × one method. A generating method (a GRADMM variant of `registry.GENERATORS` or an
LM-generation baseline) writes `raw_per_class` texts per class once per generation seed; the filter keeps n per
class; the training set is then fine-tuned once per fine-tuning seed (data order; the LR picked on dev). So
the spread of a cell is the fine-tuning spread over `len(seeds)` runs for each of `len(generation_seeds)`
generated sets; `random_real` draws its subset with the fine-tuning seed. Files of a cell (`--out`):

    cell_config.json                  the params the cell was started with (a cell with others is archived)
    generated-g<G>/                   the resumable GRADMM run (history.jsonl: ADMM health per outer step)
    diagnostics-g<G>.json             class discrimination of the variant's target(s), match of the texts
    trainset-n<N>-g<G>.jsonl (+ .info.json)
    result-n<N>-g<G>-s<S>.json        one fine-tuning run; a finished one is never redone

`gradmm study` runs a cell; `gradmm study-report` gathers every cell into reports/tables/variants.csv,
reports/tables/variants.md and reports/figures/variants.png.
"""

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import torch

from gradmm.config import (
    DPConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
    StudyConfig,
    as_dict,
    build,
    config_hash,
    load_config,
    read_params,
)
from gradmm.core.admm import check_config
from gradmm.core.diagnostics import bootstrap_ci
from gradmm.core.matching import hidden_and_logits, match_loss
from gradmm.core.models import load_model
from gradmm.core.scoring import first_label_ids
from gradmm.io.ray_engine import LOCAL, Engine
from gradmm.io.records import read_json, read_jsonl, read_text_rows, write_json, write_jsonl
from gradmm.io.worksharing import claimed_run_dir, file_lock, shared_loop
from gradmm.methods import registry
from gradmm.methods.filtering import check_config as check_filter
from gradmm.methods.generate import build_targets, check_dp, generate, matching_task, task_fingerprint
from gradmm.methods.registry import variant_overrides
from gradmm.methods.trainsets import check_llm_draws, evaluate_method, make_trainset

log = logging.getLogger(__name__)



SCREEN_KEYS = ("datasets", "n_per_class", "methods")


def screen_config(cfg: StudyConfig) -> StudyConfig:
    """The study's settings for the screen: its datasets, budgets and methods, the same schedule and seeds."""
    bad = [k for k in cfg.screen if k not in SCREEN_KEYS]
    if bad:
        raise ValueError(f"study.screen keys {bad} unknown: use {list(SCREEN_KEYS)}")
    return build(StudyConfig, {**as_dict(cfg), **cfg.screen, "screen": {}}, "study")  # type- and range-checked


def check_study(cfg: StudyConfig) -> None:

    allowed = registry.names(in_studies=True)
    unknown = [m for m in cfg.methods if m not in allowed]
    if unknown:
        raise ValueError(f"study.methods {unknown} unknown: use any of {allowed}")
    if not cfg.n_per_class or min(cfg.n_per_class) < 1:
        raise ValueError(f"study.n_per_class must list budgets ≥ 1, got {cfg.n_per_class}")
    if cfg.raw_per_class < max(cfg.n_per_class):
        raise ValueError(f"study.raw_per_class ({cfg.raw_per_class}) must be ≥ the largest budget {max(cfg.n_per_class)}")
    if not cfg.seeds or not cfg.generation_seeds:
        raise ValueError("study.seeds and study.generation_seeds must not be empty")

    for section, cls in (("generate", GenerateConfig), ("finetune", FinetuneConfig)):
        bad = [k for k in getattr(cfg, section) if k not in cls.__dataclass_fields__]
        if bad:
            raise ValueError(f"study.{section} keys {bad} are not {section} params: use {sorted(cls.__dataclass_fields__)}")


def finetune_overrides(cfg: StudyConfig) -> list[str]:
    return [f"finetune.{k}={json.dumps(v)}" for k, v in cfg.finetune.items()]


def method_overrides(method: str, cfg: StudyConfig, generation_seed: int, params: dict | None = None) -> list[str]:
    """`section.key=value` overrides that configure a GRADMM variant inside the study (`params`: the study's
    params file, whose `variants` section, if any, wins over the registry's settings)."""
    # The study's schedule first, so that a variant's own settings (e.g. gradmm_converge's steps) win.
    return ([f"generate.{k}={json.dumps(v)}" for k, v in cfg.generate.items()] + variant_overrides(method, params)
            + [f"generate.n_per_class={cfg.raw_per_class}", f"generate.seed={generation_seed}"])


def cell_experiment_keys(exp_cfg) -> dict:
    """The experiment params a cell's files depend on; the classification job's own lists (datasets, methods,
    generators, its n and seeds) are not among them, so editing those does not archive the study."""
    return {k: v for k, v in as_dict(exp_cfg).items() if k in ("llm_shots", "coreset_features",
                                                                   "llm_consistent_per_class", "llm_max_raw_per_class")}


def run_order(budgets: list[int], generation_seeds: list[int], seeds: list[int]) -> list[tuple[int, int, int]]:
    """A cell's runs (n, generation seed, fine-tuning seed), each generated set's first run first: processes that
    share the cell then build different sets at the start instead of waiting for the one being built."""
    runs = [(n, g, s) for n in budgets for g in generation_seeds for s in seeds]
    return sorted(runs, key=lambda run: run[2] != seeds[0])


def run_cell(task, method: str, cfg: StudyConfig, params_file: str, model_cfg, finetune_cfg, filter_cfg,
             exp_cfg, out: Path, overrides: list[str] = (), progress: bool = True, engine: Engine = LOCAL) -> list[dict]:
    """Run (or resume) one dataset × method cell; returns every result of the cell. `engine`: where the
    generation's ADMM batches run (`gradmm.methods.generate.generate`)."""
    check_study(cfg)
    if not task.dev or not task.test:
        raise ValueError(f"task {task.name!r} needs non-empty dev (model selection) and test (reporting) splits")
    out = Path(out)
    gens = {}
    if registry.get(method).generated:  # every check before the model loads
        params = read_params(params_file)
        for g in cfg.generation_seeds:
            ov = method_overrides(method, cfg, g, params) + list(overrides)
            gens[g] = (load_config(GenerateConfig, "generate", params_file, ov), load_config(DPConfig, "dp", params_file, ov),
                       load_config(FilterConfig, "filter", params_file, ov))
            check_config(gens[g][0])
            check_dp(gens[g][1])
            check_filter(gens[g][2])
    else:
        check_llm_draws(replace(exp_cfg, llm_raw_per_class=cfg.raw_per_class))
    # What a cell's files depend on: more budgets, seeds, datasets or methods extend a study, they don't redo it.
    study_keys = {k: v for k, v in as_dict(cfg).items() if k in ("raw_per_class", "generate", "finetune", "diagnostics_sets")}
    params = {"task": task_fingerprint(task), "method": method, "study": study_keys, "model": as_dict(model_cfg),
              "finetune": as_dict(finetune_cfg), "filter": as_dict(filter_cfg), "experiment": cell_experiment_keys(exp_cfg),
              "variant": {g: [as_dict(c) for c in v] for g, v in gens.items()}}
    with claimed_run_dir(out, params, archive_stale=True):  # held until every run of the cell is done
        model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
        per_seed_sets = registry.get(method).per_seed_set
        runs = run_order(cfg.n_per_class, cfg.generation_seeds,
                         cfg.seeds[:1] if method == "zero_shot" else cfg.seeds)  # zero-shot is deterministic: one run

        def result_path(run):
            n, g, s = run
            return out / f"result-n{n}-g{g}-s{s}.json"

        def make_set(set_path: Path, n: int, g: int, s: int, metrics: dict | None) -> None:
            if registry.get(method).generated:
                gen, dp, fcfg = gens[g]
                raw = read_jsonl(out / f"generated-g{g}" / "raw.jsonl")
                rows, info = make_trainset(method, model, tok, task, None, g, fcfg, progress, raw=raw, private=dp.enabled,
                                           n=n)
                info["generate_metrics"] = metrics
                diag = out / f"diagnostics-g{g}.json"
                if not diag.is_file():
                    write_json(diag, variant_diagnostics(model, tok, task, gen, raw, cfg.diagnostics_sets))
            else:
                exp = type(exp_cfg)(**{**as_dict(exp_cfg), "n_per_class": n, "llm_raw_per_class": cfg.raw_per_class})
                rows, info = make_trainset(method, model, tok, task, exp, s if per_seed_sets else g, filter_cfg,
                                           progress=progress)
            write_json(set_path.with_suffix(".info.json"), info)
            write_jsonl(set_path, rows)  # last: its presence means the set is complete

        def run_one(run):
            n, g, s = run
            set_path = out / (f"trainset-n{n}-s{s}.jsonl" if per_seed_sets else f"trainset-n{n}-g{g}.jsonl")
            metrics = None
            if registry.get(method).generated and not set_path.is_file():  # outside the set's lock: workers share the batches
                gen, dp, _ = gens[g]
                metrics = generate(task, model_cfg, gen, dp, out / f"generated-g{g}", progress=progress, archive_stale=True,
                                   engine=engine)
            with file_lock(out / ".locks" / set_path.name):  # runs of other seeds share a generated set
                if not set_path.is_file():
                    make_set(set_path, n, g, s, metrics)
            rows = read_text_rows(set_path)
            result = evaluate_method(method, rows, model, tok, task, finetune_cfg, s, progress)
            result.update(dataset=task.name, model=model_cfg.name, n_per_class=n, generation_seed=g,
                          train_file=set_path.name, params_hash=config_hash(finetune_cfg))
            write_json(result_path(run), result)
            log.info("%s %s n=%d g=%d s=%d: test %s dev %s", task.name, method, n, g, s,
                     "EMPTY training set" if result.get("empty_trainset") else f"{result['test_accuracy']:.3f}",
                     result.get("dev_accuracy"))

        # Processes started with the same cell share its runs (gradmm.io.worksharing); a finished one is never redone.
        shared_loop(runs, lambda run: out / ".locks" / result_path(run).name, lambda run: result_path(run).is_file(), run_one)
        results = [read_json(result_path(run)) for run in runs]
        return results


def variant_diagnostics(model, tokenizer, task, gen, raw: list[dict], n_sets: int = 5, set_size: int = 10,
                        seed: int = 0) -> dict:
    """Does the variant's target tell the classes apart, and how close are its texts? (the study's diagnostics)

    For each target (per class, or the joint one) the set-level match loss of disjoint dev sets labelled with
    their true class ("same") and with another class ("other"); margin = other − same with a bootstrap 95 %
    interval over the sets; the mean probability of the true label word under the matched template; and the
    same loss for sets of the variant's synthetic texts (as labelled) and random word-token sequences.
    """


    mtask = matching_task(task, gen)
    targets, _ = build_targets(model, tokenizer, mtask, gen, DPConfig())  # clean targets: a diagnostic only
    ys = first_label_ids(tokenizer, mtask.template)
    C, rng = task.n_classes, random.Random(seed)

    def loss(texts, labels, target):
        H, logits = hidden_and_logits(model, tokenizer, texts, mtask.template)
        return match_loss(H, logits, torch.tensor([ys[c] for c in labels]), target).item()

    def sets(examples):
        examples = list(examples)
        rng.shuffle(examples)
        return [examples[i * set_size:(i + 1) * set_size] for i in range(min(n_sets, len(examples) // set_size))]

    out = {"template": mtask.template.format, "joint": gen.joint, "center": gen.center, "targets": []}
    for k, target in enumerate(targets):
        classes = list(range(C)) if gen.joint else [k]
        pool = [ex for ex in task.dev if ex.label in classes]
        real_sets = sets(pool)
        # "other": the same texts labelled as the next class; for a class target, other-class dev texts.
        same = [loss([e.text for e in s], [e.label for e in s], target) for s in real_sets]
        if gen.joint:
            other = [loss([e.text for e in s], [(e.label + 1) % C for e in s], target) for s in real_sets]
        else:
            other = [loss([e.text for e in s], [k] * len(s), target) for s in sets(ex for ex in task.dev if ex.label != k)]
        H, logits = hidden_and_logits(model, tokenizer, [ex.text for ex in pool], mtask.template)
        p_label = torch.softmax(logits, -1)[torch.arange(len(pool)), torch.tensor([ys[ex.label] for ex in pool])]
        synth = [r for r in raw if r["label"] in classes]
        synth_sets = [synth[i:i + set_size] for i in range(0, len(synth) - set_size + 1, set_size)][:n_sets]
        margins = [o - s for o, s in zip(other, same)]
        out["targets"].append({
            "target": "joint" if gen.joint else task.class_names[k],
            "real_same": same, "real_other": other, "margin_mean": sum(margins) / max(len(margins), 1),
            "margin_ci95": bootstrap_ci(margins, seed=seed), "label_word_probability": p_label.mean().item(),
            "synthetic": [loss([r["text"] for r in s], [r["label"] for r in s], target) for s in synth_sets]})
    return out


# ---- the report ------------------------------------------------------------------------------------------



















