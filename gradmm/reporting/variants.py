"""The variants study's report: its cells' results gathered into reports/tables/variants.{csv,md}, reports/figures/variants.png
and MLflow runs (`gradmm study-report`, notebooks/04_variants.ipynb)."""

from pathlib import Path

import pandas as pd

from gradmm.config import read_params
from gradmm.io.records import read_json, read_jsonl, read_text_rows
from gradmm.methods.registry import GENERATORS, ordered_methods
from gradmm.reporting.classification import fixed_jitter, format_accuracy, format_number
from gradmm.reporting.tracking import log_result, relevant_params


def collect(study_dir: str | Path = "studies/variants") -> "pd.DataFrame":
    """Every result of every cell as one row (dataset, model, method, n_per_class, generation_seed, seed, ...)."""
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


def _admm_health(last: "pd.DataFrame") -> dict:
    """ADMM health at the last outer iteration of each batch, averaged over the batches."""
    return {"outer_steps_run": float(last["t"].mean() + 1),
            "changed_fraction_last": float(last["changed_fraction"].mean()),
            # NaN without a matching term (gradmm_no_matching): a ratio to zero says nothing
            "penalty_to_match_grad": float((last["grad_norm_penalty"] / last["grad_norm_match"].where(
                last["grad_norm_match"] > 0)).median()),
            "f_X_last": float(last["f_X"].mean()) if "f_X" in last else float("nan"),
            "f_Z_last": float(last["f_Z"].mean()), "logppl_Z_last": float(last["logppl_Z"].mean())}


def health(study_dir: str | Path = "studies/variants") -> "pd.DataFrame":
    """Per GRADMM cell: ADMM health at the last outer iteration (means over batches) and target discrimination."""
    rows = []
    for hist in sorted(Path(study_dir).glob("*/*/generated-g*/history.jsonl")):
        recs = read_jsonl(hist)
        cell = hist.parent.parent
        g = int(hist.parent.name.split("-g")[1])
        row = {"dataset": cell.parent.name, "method": cell.name, "generation_seed": g, "outer_steps_run": 0.0}
        if recs:
            last = pd.DataFrame(recs).sort_values("t").groupby(["class", "batch"]).tail(1)
            row.update(_admm_health(last))
        elif (hist.parent / "generate_metrics.json").is_file():  # no ADMM (gradmm_swap): the final tokens' f, log-ppl
            classes = read_json(hist.parent / "generate_metrics.json")["classes"]
            row["f_Z_last"] = float(pd.Series([v for c in classes for v in c["f_Z"]]).mean())
            row["logppl_Z_last"] = float(pd.Series([c["mean_log_perplexity"] for c in classes]).mean())
            if all("f_init_candidates" in c for c in classes):  # the first LM batch drawn: no matching's pick
                row["f_Z_unmatched"] = float(pd.Series([f[0] for c in classes for f in c["f_init_candidates"]]).mean())
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
    part = summ[summ.method.isin(set(GENERATORS) - {"gradmm_plus", "gradmm_no_matching"})]  # the ablation is no candidate
    if part.empty:
        return None
    panels = part.groupby("method").size()
    widest = part[part.method.isin(panels.index[panels == panels.max()])]
    return str(widest.groupby("method").dev_mean.mean().idxmax())


def comparisons(df: "pd.DataFrame", references=("llm_zero_shot_gen", "gradmm_no_matching", "random_real")) -> "pd.DataFrame":
    """Per panel and GRADMM variant: the test-accuracy difference to each reference method and Welch's t-test p."""
    from scipy.stats import ttest_ind  # heavy: imported where used, not at every CLI start

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


def seed_spread(df: "pd.DataFrame") -> "pd.DataFrame":
    """Per cell, how much of the spread is the generated set and how much the fine-tuning: the sd over
    generation seeds of each set's mean accuracy, the mean sd over fine-tuning seeds within a set, and a 95 %
    interval of the cell mean that takes the set as the unit (Student t over the set means, g − 1 df)."""
    from scipy.stats import t as student_t

    rows = []
    for (d, n, m), cell in df.groupby(["dataset", "n_per_class", "method"]):
        per_set = cell.groupby("generation_seed").accuracy
        means, g = per_set.mean(), cell.generation_seed.nunique()
        half = (student_t.ppf(0.975, g - 1) * means.std() / g ** 0.5) if g > 1 else float("nan")
        rows.append({"dataset": d, "n_per_class": n, "method": m, "sets": g, "mean": cell.accuracy.mean(),
                     "sd_between_sets": means.std() if g > 1 else float("nan"),
                     "sd_within_set": per_set.std().mean(), "ci95_low": means.mean() - half,
                     "ci95_high": means.mean() + half})
    return pd.DataFrame(rows)


def batch_f_Z(cell: Path) -> float:
    """Mean f(Z) over every generated batch of a cell (all generation seeds, all classes)."""
    values = [f for path in sorted(Path(cell).glob("generated-g*/generate_metrics.json"))
              for c in read_json(path)["classes"] for f in c["f_Z"]]
    return sum(values) / len(values) if values else float("nan")


def paired_gains(first: "pd.DataFrame", cell: "pd.DataFrame") -> dict:
    """The cell's gain over `first` per generation seed both have (set mean minus set mean, in points), their mean
    and the seeds' gains as text ("+6.5; +5.5; +4.0"); blank for the first cell itself or without shared seeds."""
    a, b = (d.groupby("generation_seed").accuracy.mean() for d in (first, cell))
    shared = sorted(set(a.index) & set(b.index))
    if cell is first or not shared:
        return {"paired_gain_vs_first": float("nan"), "paired_gains_vs_first": ""}
    gains = [100 * (b[g] - a[g]) for g in shared]
    return {"paired_gain_vs_first": sum(gains) / len(gains),
            "paired_gains_vs_first": "; ".join(f"{round(x, 1) + 0.0:+.1f}" for x in gains)}  # no "-0.0"


def compare_cells(studies: dict[str, tuple[Path, str]], dataset: str) -> "pd.DataFrame":
    """One dataset's cell run in several studies (label -> (study folder, method); e.g. fp32 and the fast path,
    or two variants drawing the same LM texts), one row each, with its method: the
    seed spread, the mean dev accuracy (the split to choose by), training texts and share of test predictions in
    the most predicted class, the cell's mean f(Z), the model dtype it ran with, Welch's p against the first, and
    the gain over the first paired by generation seed (each set's mean accuracy minus the first cell's set of the
    same seed: the pairing that counts where two cells draw the same LM texts)."""
    from scipy.stats import ttest_ind

    rows, first = [], None
    for label, (study, method) in studies.items():
        df = collect(study)
        df = df[(df.dataset == dataset) & (df.method == method)]
        if df.empty:
            raise ValueError(f"no results of {dataset}/{method} under {study}/: run that cell first")
        first = df if first is None else first
        cell = Path(study) / dataset / method
        # the dtype it generated with; a baseline cell's own record (the dtype it fine-tuned with) otherwise
        config = next((c for c in (cell / "generated-g0" / "run_config.json", cell / "run_config.json") if c.is_file()),
                      cell / "run_config.json")
        rows.append({**seed_spread(df).iloc[0].to_dict(), "cell": label, "dev_mean": df.dev_accuracy.mean(),
                     "texts_mean": df.n_train.mean(), "majority_share_mean": df.majority_share.mean(),
                     "f_Z_mean": batch_f_Z(cell),
                     "model_dtype": read_json(config)["model"]["dtype"] if config.is_file() else None,
                     "welch_p_vs_first": float("nan") if df is first else
                     ttest_ind(first.accuracy, df.accuracy, equal_var=False).pvalue,
                     **paired_gains(first, df)})
    table = pd.DataFrame(rows)
    return table[["dataset", "n_per_class", "cell", *[c for c in table.columns if c not in ("dataset", "n_per_class", "cell")]]]


def seed_spread_lines(spread: "pd.DataFrame") -> list[str]:
    lines = ["## Seed spread", "",
             "Test accuracy (%) per cell: `between sets` = sd over generation seeds of each generated set's mean; "
             "`within set` = mean sd over the fine-tuning seeds of one set; `95 % CI` = the cell mean's interval "
             "with the generated set as the unit (t over the set means). Welch's p above treats every run as "
             "independent, so it overstates the evidence wherever `between sets` is large.", "",
             "| dataset | n | method | sets | mean | between sets | within set | 95 % CI |", "|---|---|---|---|---|---|---|---|"]
    for r in spread.itertuples():
        ci = "" if r.ci95_low != r.ci95_low else f"{100 * r.ci95_low:.1f} – {100 * r.ci95_high:.1f}"
        lines.append(f"| {r.dataset} | {r.n_per_class} | {r.method} | {r.sets} | {100 * r.mean:.1f} | "
                     f"{format_number(100 * r.sd_between_sets, '.1f')} | {format_number(100 * r.sd_within_set, '.1f')} | {ci} |")
    return lines


def panel_table(summ: "pd.DataFrame") -> list[str]:
    """Markdown lines: one row per method, one column per dataset × n (test mean ± std)."""
    panels = sorted({(r.dataset, r.n_per_class) for r in summ.itertuples()})
    cell = {(r.method, r.dataset, r.n_per_class): format_accuracy(r.mean, r.std, r.empty_runs, r.runs)
            for r in summ.itertuples()}
    lines = ["| method | " + " | ".join(f"{d} n={n}" for d, n in panels) + " |", "|---|" + "---|" * len(panels)]
    for m in ordered_methods(summ.method.unique()):
        lines.append(f"| {m} | " + " | ".join(cell.get((m, d, n), "") for d, n in panels) + " |")
    return lines


def markdown(summ: "pd.DataFrame", health_df: "pd.DataFrame", comp: "pd.DataFrame | None" = None,
             title: str = "Variants study", spread: "pd.DataFrame | None" = None) -> str:
    lines = [f"# {title}: test accuracy (%) at equal budget", "",
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
    if spread is not None and spread.sets.max() > 1:
        lines += ["", *seed_spread_lines(spread)]
    if len(health_df):
        lines += ["", "## Diagnostics of each GRADMM variant", "",
                  "margin = match loss of held-out real sets labelled with another class − with their own (> 0: "
                  "the target tells the classes apart; CI low = lowest bootstrap 2.5 % bound over targets); "
                  "changed = share of tokens changed at the last Z-step; penalty/match = ratio of the X-step "
                  "gradient norms; f(X), f(Z) = match loss of the batch's embeddings and of its kept tokens (batch "
                  "means); f(Z) unmatched = the first LM batch drawn from the same start, no matching's pick (LM-text "
                  "variants); f synthetic / real = set match loss of synthetic and of same-class real texts.", "",
                  "| dataset | method | margin | CI low | label-word p | outer steps | changed | penalty/match | "
                  "f(X) | f(Z) | f(Z) unmatched | f synthetic | f real | log-ppl |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in health_df.itertuples():
            # a study without ADMM cells (LM text only) has no ADMM columns at all: those cells stay blank
            get = lambda k, fmt: "" if getattr(r, k, None) is None or getattr(r, k) != getattr(r, k) else format(getattr(r, k), fmt)  # noqa: E731
            lines.append(f"| {r.dataset} | {r.method} | {get('margin', '.4f')} | {get('margin_ci_low', '.4f')} | "
                         f"{get('label_word_p', '.3f')} | {get('outer_steps_run', '.1f')} | "
                         f"{get('changed_fraction_last', '.2f')} | {get('penalty_to_match_grad', '.1f')} | "
                         f"{get('f_X_last', '.3f')} | {get('f_Z_last', '.3f')} | {get('f_Z_unmatched', '.3f')} | "
                         f"{get('f_synthetic', '.3f')} | {get('f_real_same', '.3f')} | {get('logppl_Z_last', '.2f')} |")
    return "\n".join(lines) + "\n"


def plot(df: "pd.DataFrame", path_png: str | Path):
    import matplotlib
    import seaborn as sns  # heavy: imported where used, not at every CLI start

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


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


def sample_texts(study_dir: str | Path, per_class: int = 2) -> str:
    """Markdown: the first `per_class` texts of each class in each cell's first training set (generation seed 0,
    or fine-tuning seed 0 for the real subsets), as the fine-tuning saw them."""
    lines = ["## Sample texts", "", f"The first {per_class} texts of each class in each cell's first training set "
             "(generation seed 0; real subsets: fine-tuning seed 0).", ""]
    for cell in sorted(p for p in Path(study_dir).glob("*/*") if list(p.glob("trainset-*.jsonl"))):
        first = sorted(cell.glob("trainset-*-g0.jsonl")) or sorted(cell.glob("trainset-*-s0.jsonl"))
        if not first:
            continue
        rows = read_text_rows(first[0])
        lines.append(f"**{cell.parent.name} / {cell.name}** ({first[0].name}, {len(rows)} texts)")
        lines.append("")
        for label in sorted({r["label"] for r in rows}):
            for r in [r for r in rows if r["label"] == label][:per_class]:
                lines.append(f"- ({label}) {' '.join(r['text'].split())}")
        lines.append("")
    return "\n".join(lines)


def write_report(study_dir: str | Path, reports_dir: str | Path, params_file: str | Path | None = None,
                 name: str = "variants", project_root: str | Path | None = None, samples: int = 0) -> "pd.DataFrame":
    """Tables, figure and (with a params file) MLflow runs of the whole study; `name` names the files
    (tables/<name>.{csv,md}, tables/<name>_health.csv, figures/<name>.png) and the MLflow experiment
    (<name>_study, in project_root's store; default the params file's folder)."""
    df = collect(study_dir)
    if df.empty:
        raise FileNotFoundError(f"no study results under {study_dir}: run `dvc repro study_report` (or `gradmm study`)")
    reports = Path(reports_dir)
    (reports / "tables").mkdir(parents=True, exist_ok=True)
    df.sort_values(["dataset", "n_per_class", "method", "generation_seed", "seed"]).to_csv(
        reports / "tables" / f"{name}.csv", index=False)
    health_df = health(study_dir)
    health_df.to_csv(reports / "tables" / f"{name}_health.csv", index=False)
    title = f"{name.replace('_', ' ').capitalize()} study"
    text = markdown(summary(df), health_df, comparisons(df), title, seed_spread(df))
    (reports / "tables" / f"{name}.md").write_text(text + ("\n" + sample_texts(study_dir, samples) if samples else ""))
    plot(df, reports / "figures" / f"{name}.png")
    if params_file is not None and Path(params_file).is_file():  # after the files: MLflow never costs a result

        log_to_mlflow(df, health_df, study_dir, read_params(params_file), experiment=f"{name}_study",
                      project_root=project_root or Path(params_file).parent)
    return df
