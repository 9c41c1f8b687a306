"""The variants study (issue 9): GRADMM variants against LM-generated and real text, at an equal budget.

One cell = one dataset × one method. A generating method (a GRADMM variant of `experiment.GENERATORS` or an
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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradmm.config import as_dict, build, config_hash
from gradmm.io.records import read_json, read_jsonl, read_text_rows, write_json, write_jsonl
from gradmm.io.worksharing import claimed_run_dir, file_lock, shared_loop

log = logging.getLogger(__name__)

LM_GENERATED = ("llm_zero_shot_gen", "llm_few_shot_gen")
STUDY_BASELINES = ("zero_shot", "random_real", "herding", "kcenter", "full_real") + LM_GENERATED


@dataclass
class StudyConfig:
    datasets: list[str] = field(default_factory=lambda: ["rtpolarity"])
    n_per_class: list[int] = field(default_factory=lambda: [10])  # budgets n
    raw_per_class: int = 20  # texts every generating method writes per class before the filter
    generation_seeds: list[int] = field(default_factory=lambda: [0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # fine-tuning seeds (random_real: subsets)
    methods: list[str] = field(default_factory=lambda: ["random_real", "llm_zero_shot_gen", "gradmm"])
    generate: dict = field(default_factory=dict)  # generate.* overrides for every GRADMM variant (the schedule)
    finetune: dict = field(default_factory=dict)  # finetune.* overrides for every method (e.g. the LR grid)
    diagnostics_sets: int = 5  # disjoint dev sets of 10 per kind for the class-discrimination diagnostic
    # The cheap first pass (`gradmm study --screen`): these keys replace the study's own for the variants that
    # were only screened (e.g. {datasets: [rtpolarity], n_per_class: [10], methods: [...]}).
    screen: dict = field(default_factory=dict)

SCREEN_KEYS = ("datasets", "n_per_class", "methods")


def screen_config(cfg: StudyConfig) -> StudyConfig:
    """The study's settings for the screen: its datasets, budgets and methods, the same schedule and seeds."""
    bad = [k for k in cfg.screen if k not in SCREEN_KEYS]
    if bad:
        raise ValueError(f"study.screen keys {bad} unknown: use {list(SCREEN_KEYS)}")
    return build(StudyConfig, {**as_dict(cfg), **cfg.screen, "screen": {}}, "study")  # type- and range-checked


def check_study(cfg: StudyConfig) -> None:
    from gradmm.methods.trainsets import GENERATORS

    allowed = list(STUDY_BASELINES) + list(GENERATORS)
    unknown = [m for m in cfg.methods if m not in allowed]
    if unknown:
        raise ValueError(f"study.methods {unknown} unknown: use any of {allowed}")
    if not cfg.n_per_class or min(cfg.n_per_class) < 1:
        raise ValueError(f"study.n_per_class must list budgets ≥ 1, got {cfg.n_per_class}")
    if cfg.raw_per_class < max(cfg.n_per_class):
        raise ValueError(f"study.raw_per_class ({cfg.raw_per_class}) must be ≥ the largest budget {max(cfg.n_per_class)}")
    if not cfg.seeds or not cfg.generation_seeds:
        raise ValueError("study.seeds and study.generation_seeds must not be empty")
    from gradmm.core.admm import GenerateConfig

    from gradmm.methods.finetune import FinetuneConfig

    for section, cls in (("generate", GenerateConfig), ("finetune", FinetuneConfig)):
        bad = [k for k in getattr(cfg, section) if k not in cls.__dataclass_fields__]
        if bad:
            raise ValueError(f"study.{section} keys {bad} are not {section} params: use {sorted(cls.__dataclass_fields__)}")


def finetune_overrides(cfg: StudyConfig) -> list[str]:
    return [f"finetune.{k}={json.dumps(v)}" for k, v in cfg.finetune.items()]


def method_overrides(method: str, cfg: StudyConfig, generation_seed: int) -> list[str]:
    """`section.key=value` overrides that configure a GRADMM variant inside the study."""
    from gradmm.methods.trainsets import variant_overrides

    # The study's schedule first, so that a variant's own settings (e.g. gradmm_converge's steps) win.
    return ([f"generate.{k}={json.dumps(v)}" for k, v in cfg.generate.items()] + variant_overrides(method)
            + [f"generate.n_per_class={cfg.raw_per_class}", f"generate.seed={generation_seed}"])


def cell_experiment_keys(exp_cfg) -> dict:
    """The experiment params a cell's files depend on; the classification job's own lists (datasets, methods,
    generators, its n and seeds) are not among them, so editing those does not archive the study."""
    return {k: v for k, v in as_dict(exp_cfg).items() if k in ("llm_shots", "coreset_features")}


def run_cell(task, method: str, cfg: StudyConfig, params_file: str, model_cfg, finetune_cfg, filter_cfg,
             exp_cfg, out: Path, overrides: list[str] = (), progress: bool = True) -> list[dict]:
    """Run (or resume) one dataset × method cell; returns every result of the cell."""
    from gradmm.core.admm import GenerateConfig, check_config
    from gradmm.config import load_config
    from gradmm.methods.trainsets import GENERATORS, baseline_trainset, evaluate_method
    from gradmm.methods.filtering import FilterConfig, check_config as check_filter, filter_rows
    from gradmm.methods.generate import DPConfig, check_dp, generate, task_fingerprint
    from gradmm.core.models import load_model

    check_study(cfg)
    if not task.dev or not task.test:
        raise ValueError(f"task {task.name!r} needs non-empty dev (model selection) and test (reporting) splits")
    out = Path(out)
    gens = {}
    if method in GENERATORS:  # every check before the model loads
        for g in cfg.generation_seeds:
            ov = method_overrides(method, cfg, g) + list(overrides)
            gens[g] = (load_config(GenerateConfig, "generate", params_file, ov), load_config(DPConfig, "dp", params_file, ov),
                       load_config(FilterConfig, "filter", params_file, ov))
            check_config(gens[g][0])
            check_dp(gens[g][1])
            check_filter(gens[g][2])
    # What a cell's files depend on: more budgets, seeds, datasets or methods extend a study, they don't redo it.
    study_keys = {k: v for k, v in as_dict(cfg).items() if k in ("raw_per_class", "generate", "finetune", "diagnostics_sets")}
    params = {"task": task_fingerprint(task), "method": method, "study": study_keys, "model": as_dict(model_cfg),
              "finetune": as_dict(finetune_cfg), "filter": as_dict(filter_cfg), "experiment": cell_experiment_keys(exp_cfg),
              "variant": {g: [as_dict(c) for c in v] for g, v in gens.items()}}
    with claimed_run_dir(out, params, archive_stale=True):  # held until every run of the cell is done
        model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
        per_seed_sets = method in ("random_real", "herding", "kcenter")
        runs = [(n, g, s) for n in cfg.n_per_class for g in cfg.generation_seeds
                for s in (cfg.seeds[:1] if method == "zero_shot" else cfg.seeds)]  # zero-shot is deterministic: one run

        def result_path(run):
            n, g, s = run
            return out / f"result-n{n}-g{g}-s{s}.json"

        def make_set(set_path: Path, n: int, g: int, s: int, metrics: dict | None) -> None:
            if method in GENERATORS:
                gen, dp, fcfg = gens[g]
                raw = read_jsonl(out / f"generated-g{g}" / "raw.jsonl")
                fcfg.n_per_class = n
                rows, info = filter_rows(model, tok, task, raw, fcfg, private=dp.enabled, progress=progress)
                info = {"filter": info, "generate_metrics": metrics}
                diag = out / f"diagnostics-g{g}.json"
                if not diag.is_file():
                    write_json(diag, variant_diagnostics(model, tok, task, gen, raw, cfg.diagnostics_sets))
            else:
                exp = type(exp_cfg)(**{**as_dict(exp_cfg), "n_per_class": n, "llm_raw_per_class": cfg.raw_per_class})
                fcfg = FilterConfig(**{**as_dict(filter_cfg), "n_per_class": n})
                rows, info = baseline_trainset(method, model, tok, task, exp, s if per_seed_sets else g, fcfg,
                                               progress=progress)
            write_json(set_path.with_suffix(".info.json"), info)
            write_jsonl(set_path, rows)  # last: its presence means the set is complete

        def run_one(run):
            n, g, s = run
            set_path = out / (f"trainset-n{n}-s{s}.jsonl" if per_seed_sets else f"trainset-n{n}-g{g}.jsonl")
            metrics = None
            if method in GENERATORS and not set_path.is_file():  # outside the set's lock: workers share the batches
                gen, dp, _ = gens[g]
                metrics = generate(task, model_cfg, gen, dp, out / f"generated-g{g}", progress=progress, archive_stale=True)
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
    """Does the variant's target tell the classes apart, and how close are its texts? (issue 9, diagnostics)

    For each target (per class, or the joint one) the set-level match loss of disjoint dev sets labelled with
    their true class ("same") and with another class ("other"); margin = other − same with a bootstrap 95 %
    interval over the sets; the mean probability of the true label word under the matched template; and the
    same loss for sets of the variant's synthetic texts (as labelled) and random word-token sequences.
    """
    import random

    import torch

    from gradmm.core.diagnostics import bootstrap_ci
    from gradmm.methods.generate import DPConfig, build_targets, matching_task
    from gradmm.core.matching import hidden_and_logits, match_loss
    from gradmm.core.scoring import first_label_ids

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

def collect(study_dir: str | Path = "studies/variants") -> "pd.DataFrame":
    """Every result of every cell as one row (dataset, model, method, n_per_class, generation_seed, seed, ...)."""
    import pandas as pd

    rows = []
    for path in sorted(Path(study_dir).glob("*/*/result-*.json")):
        r = read_json(path)
        shares = r.get("test_prediction_shares") or []
        rows.append({"dataset": r["dataset"], "model": r["model"], "method": r["method"],
                     "n_per_class": r["n_per_class"], "generation_seed": r["generation_seed"], "seed": r["seed"],
                     "accuracy": r["test_accuracy"], "dev_accuracy": r.get("dev_accuracy"),
                     "best_lr": r.get("best_lr"), "majority_share": max(shares) if shares else None,
                     "n_train": r.get("n_train"), "wall_seconds": round(r.get("wall_seconds", 0.0), 1),
                     "empty_trainset": bool(r.get("empty_trainset"))})
    return pd.DataFrame(rows)


def health(study_dir: str | Path = "studies/variants") -> "pd.DataFrame":
    """Per GRADMM cell: ADMM health at the last outer iteration (means over batches) and target discrimination."""
    import pandas as pd

    rows = []
    for hist in sorted(Path(study_dir).glob("*/*/generated-g*/history.jsonl")):
        recs = read_jsonl(hist)
        last = pd.DataFrame(recs).sort_values("t").groupby(["class", "batch"]).tail(1)
        cell = hist.parent.parent
        g = int(hist.parent.name.split("-g")[1])
        row = {"dataset": cell.parent.name, "method": cell.name, "generation_seed": g,
               "outer_steps_run": float(last["t"].mean() + 1),
               "changed_fraction_last": float(last["changed_fraction"].mean()),
               # NaN without a matching term (gradmm_no_matching): a ratio to zero says nothing
               "penalty_to_match_grad": float((last["grad_norm_penalty"] / last["grad_norm_match"].where(
                   last["grad_norm_match"] > 0)).median()),
               "f_Z_last": float(last["f_Z"].mean()), "logppl_Z_last": float(last["logppl_Z"].mean())}
        diag = cell / f"diagnostics-g{g}.json"
        if diag.is_file():
            d = read_json(diag)
            row["margin"] = sum(t["margin_mean"] for t in d["targets"]) / len(d["targets"])
            row["margin_ci_low"] = min(t["margin_ci95"][0] for t in d["targets"])
            row["label_word_p"] = sum(t["label_word_probability"] for t in d["targets"]) / len(d["targets"])
            synth = [v for t in d["targets"] for v in t["synthetic"]]
            same = [v for t in d["targets"] for v in t["real_same"]]
            row["f_synthetic"] = sum(synth) / len(synth) if synth else None
            row["f_real_same"] = sum(same) / len(same) if same else None
        rows.append(row)
    return pd.DataFrame(rows)


def summary(df: "pd.DataFrame") -> "pd.DataFrame":
    """Mean ± std of test accuracy per (dataset, n, method), beside dev accuracy and the majority-class share."""
    df = df.assign(empty_trainset=df["empty_trainset"] if "empty_trainset" in df else False)  # older collect() frames
    g = df.groupby(["dataset", "model", "n_per_class", "method"])
    return g.agg(runs=("accuracy", "size"), mean=("accuracy", "mean"), std=("accuracy", "std"),
                 empty_runs=("empty_trainset", "sum"),
                 dev_mean=("dev_accuracy", "mean"), majority_share=("majority_share", "mean"),
                 n_train=("n_train", "mean"), wall_seconds=("wall_seconds", "mean")).reset_index().sort_values(
        ["dataset", "n_per_class", "dev_mean"], ascending=[True, True, False])


def dev_pick(summ: "pd.DataFrame") -> str | None:
    """The GRADMM variant (not gradmm_plus, the pick itself, nor the no-matching ablation) with the best dev accuracy averaged over its
    panels (dataset × n), among the variants run on the most panels (the grid's, not the screen's); None
    without a variant."""
    from gradmm.methods.trainsets import GENERATORS

    part = summ[summ.method.isin(set(GENERATORS) - {"gradmm_plus", "gradmm_no_matching"})]  # the ablation is no candidate
    if part.empty:
        return None
    panels = part.groupby("method").size()
    widest = part[part.method.isin(panels.index[panels == panels.max()])]
    return str(widest.groupby("method").dev_mean.mean().idxmax())


def comparisons(df: "pd.DataFrame", references=("llm_zero_shot_gen", "gradmm_no_matching", "random_real")) -> "pd.DataFrame":
    """Per panel and GRADMM variant: the test-accuracy difference to each reference method and Welch's t-test p."""
    from scipy.stats import ttest_ind

    from gradmm.methods.trainsets import GENERATORS

    rows = []
    for (d, n), panel in df.groupby(["dataset", "n_per_class"]):
        acc = {m: g.accuracy.to_numpy() for m, g in panel.groupby("method")}
        for m in [m for m in acc if m in GENERATORS]:
            row = {"dataset": d, "n_per_class": n, "method": m}
            for ref in [r for r in references if r in acc and r != m]:
                row[f"diff_{ref}"] = acc[m].mean() - acc[ref].mean()
                row[f"p_{ref}"] = float(ttest_ind(acc[m], acc[ref], equal_var=False).pvalue) if min(
                    len(acc[m]), len(acc[ref])) > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def panel_table(summ: "pd.DataFrame") -> list[str]:
    """Markdown lines: one row per method, one column per dataset × n (test mean ± std)."""
    from gradmm.reporting.classification import format_accuracy, ordered_methods

    panels = sorted({(r.dataset, r.n_per_class) for r in summ.itertuples()})
    cell = {(r.method, r.dataset, r.n_per_class): format_accuracy(r.mean, r.std, r.empty_runs, r.runs)
            for r in summ.itertuples()}
    lines = ["| method | " + " | ".join(f"{d} n={n}" for d, n in panels) + " |", "|---|" + "---|" * len(panels)]
    for m in ordered_methods(summ.method.unique()):
        lines.append(f"| {m} | " + " | ".join(cell.get((m, d, n), "") for d, n in panels) + " |")
    return lines


def markdown(summ: "pd.DataFrame", health_df: "pd.DataFrame", comp: "pd.DataFrame | None" = None) -> str:
    from gradmm.reporting.classification import format_accuracy, format_number

    lines = ["# Variants study: test accuracy (%) at equal budget", "",
             "Sorted by mean dev accuracy (the only split used to choose). `majority` = mean share of test "
             "predictions in the most predicted class (50 % = balanced). `texts` = training texts in all (the "
             "filter keeps at most n per class, fewer when the label check rejects texts; classes balanced).", "",
             "| dataset | n | method | runs | texts | test mean ± std | dev mean | majority |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summ.itertuples():
        dev = "" if r.dev_mean != r.dev_mean else f"{100 * r.dev_mean:.1f}"  # NaN for zero-shot
        lines.append(f"| {r.dataset} | {r.n_per_class} | {r.method} | {r.runs} | {r.n_train:.0f} | {format_accuracy(r.mean, r.std, r.empty_runs, r.runs)} | "
                     f"{dev} | {format_number(100 * r.majority_share, '.0f')} |")
    lines += ["", "## Test accuracy by panel", "", *panel_table(summ)]
    pick = dev_pick(summ)
    if pick:
        lines += ["", f"**Dev pick** (best mean dev accuracy over the panels every variant ran on): `{pick}`."]
    if comp is not None and len(comp):
        refs = [c[len("diff_"):] for c in comp if c.startswith("diff_")]
        lines += ["", "## Each variant against the references", "",
                  "Test-accuracy difference in points (Welch's t-test p over the runs of the two cells).", "",
                  "| dataset | n | method | " + " | ".join(f"vs {r}" for r in refs) + " |",
                  "|---|---|---|" + "---|" * len(refs)]
        for r in comp.itertuples():
            cells = [f"{100 * getattr(r, f'diff_{x}'):+.1f} (p {getattr(r, f'p_{x}'):.2f})"
                     if getattr(r, f"diff_{x}") == getattr(r, f"diff_{x}") else "" for x in refs]
            lines.append(f"| {r.dataset} | {r.n_per_class} | {r.method} | " + " | ".join(cells) + " |")
    if len(health_df):
        lines += ["", "## Diagnostics of each GRADMM variant", "",
                  "margin = match loss of held-out real sets labelled with another class − with their own (> 0: "
                  "the target tells the classes apart; CI low = lowest bootstrap 2.5 % bound over targets); "
                  "changed = share of tokens changed at the last Z-step; penalty/match = ratio of the X-step "
                  "gradient norms; f = set match loss (synthetic vs same-class real).", "",
                  "| dataset | method | margin | CI low | label-word p | outer steps | changed | penalty/match | "
                  "f synthetic | f real | log-ppl |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in health_df.itertuples():
            get = lambda k, fmt: "" if getattr(r, k, None) is None or getattr(r, k) != getattr(r, k) else format(getattr(r, k), fmt)  # noqa: E731
            lines.append(f"| {r.dataset} | {r.method} | {get('margin', '.4f')} | {get('margin_ci_low', '.4f')} | "
                         f"{get('label_word_p', '.3f')} | {r.outer_steps_run:.1f} | {r.changed_fraction_last:.2f} | "
                         f"{r.penalty_to_match_grad:.1f} | {get('f_synthetic', '.3f')} | {get('f_real_same', '.3f')} | "
                         f"{r.logppl_Z_last:.2f} |")
    return "\n".join(lines) + "\n"


def plot(df: "pd.DataFrame", path_png: str | Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from gradmm.reporting.classification import fixed_jitter

    order = summary(df).drop_duplicates("method")["method"].tolist()
    panels = df[["dataset", "n_per_class"]].drop_duplicates().values.tolist()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.45 * len(order) + 1.5), squeeze=False)
    for ax, (dataset, n) in zip(axes[0], panels):
        part = df[(df.dataset == dataset) & (df.n_per_class == n)]
        sns.pointplot(data=part, y="method", x="accuracy", order=[m for m in order if m in set(part.method)],
                      errorbar="sd", linestyle="none", ax=ax)
        with fixed_jitter():
            sns.stripplot(data=part, y="method", x="accuracy", order=[m for m in order if m in set(part.method)],
                          alpha=0.35, color="grey", ax=ax)
        ax.axvline(0.5, ls=":", c="k", lw=0.8)
        ax.set_title(f"{dataset}, n = {n} per class (mean ± sd over runs)")
        ax.set_xlabel("test accuracy")
    fig.tight_layout()
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120)
    plt.close(fig)
    return fig


def log_to_mlflow(df: "pd.DataFrame", health_df: "pd.DataFrame", study_dir: str | Path, params: dict,
                  experiment: str = "variants_study", project_root: str | Path = ".") -> list[str]:
    """One MLflow run per result: params of its method (variant overrides applied), metrics incl. the
    variant's diagnostics (diag_*), artifacts: its training set, the variant's diagnostics and ADMM history."""
    import pandas as pd

    from gradmm.reporting.tracking import log_result, relevant_params

    diag = {(r["dataset"], r["method"], r["generation_seed"]): r for r in health_df.to_dict("records")}
    ids = []
    for row in df.to_dict("records"):
        row = {k: v for k, v in row.items() if not pd.isna(v)}
        cell = Path(study_dir) / row["dataset"] / row["method"]
        g = row["generation_seed"]
        for k, v in (diag.get((row["dataset"], row["method"], g)) or {}).items():
            if k not in ("dataset", "method", "generation_seed") and not pd.isna(v):
                row[f"diag_{k}"] = v
        result_file = read_json(cell / f"result-n{row['n_per_class']}-g{g}-s{row['seed']}.json")
        artifacts = [(cell / result_file["train_file"], "trainset"), (cell / f"diagnostics-g{g}.json", "diagnostics"),
                     (cell / f"generated-g{g}" / "history.jsonl", "diagnostics")]
        p = relevant_params(params, row["method"], row["dataset"], row.get("model"), row.get("n_per_class"))
        p["study"] = params.get("study") or {}
        run_id = log_result(experiment, row, p, artifacts, {"generation_seed": g}, project_root)
        if run_id:
            ids.append(run_id)
    return ids


def write_report(study_dir: str | Path, reports_dir: str | Path, params_file: str | Path | None = None) -> "pd.DataFrame":
    """Tables, figure and (with a params file) MLflow runs of the whole study."""
    df = collect(study_dir)
    if df.empty:
        raise FileNotFoundError(f"no study results under {study_dir}: run `dvc repro study_report` (or `gradmm study`)")
    reports = Path(reports_dir)
    (reports / "tables").mkdir(parents=True, exist_ok=True)
    df.sort_values(["dataset", "n_per_class", "method", "generation_seed", "seed"]).to_csv(
        reports / "tables" / "variants.csv", index=False)
    health_df = health(study_dir)
    health_df.to_csv(reports / "tables" / "variants_health.csv", index=False)
    (reports / "tables" / "variants.md").write_text(markdown(summary(df), health_df, comparisons(df)))
    plot(df, reports / "figures" / "variants.png")
    if params_file is not None and Path(params_file).is_file():  # after the files: MLflow never costs a result
        from gradmm.config import read_params

        log_to_mlflow(df, health_df, study_dir, read_params(params_file), project_root=Path(params_file).parent)
    return df
