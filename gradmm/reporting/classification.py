"""Tables and figures of the classification experiment, read from the pipeline's result files.

Every `finetune` stage writes `runs/<dataset>/results/<method>-n<n>-seed<s>.json`; this module turns those into
`reports/tables/classification.{csv,md}` and `reports/figures/classification.png`, and a GRADMM run's
`history.jsonl` into a health figure (is the matching term heard? do the tokens settle?). The notebook
`notebooks/01_classification.ipynb` calls these functions; `produce_missing` lets it fill in results
in-process (the tiny notebook test) with the same functions the DVC stages call.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot): they save with the Agg canvas whatever
the notebook's backend is, and nothing stays open between calls.
"""

import contextlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from gradmm.experiments.classification import result_file
from gradmm.io.records import read_json, read_jsonl
from gradmm.methods import registry
from gradmm.methods.registry import GENERATORS, method_rank, ordered_methods

KEYS = ["dataset", "model", "method", "n_per_class"]  # one table cell: mean ± std over seeds
TABLE_COLUMNS = KEYS + ["seed", "accuracy", "wall_seconds"]
EXTRA_COLUMNS = ["dev_accuracy", "best_lr", "n_train", "finetuned", "empty_trainset", "result_file", "train_file"]
HISTORY_COLUMNS = ["class", "batch", "t", "f_X", "f_Z", "changed_fraction", "logppl_Z", "grad_norm_match",
                   "grad_norm_penalty", "primal_residual"]






def _sorted(df: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    rank = df["method"].map(lambda m: method_rank(m)[0])
    by = ["dataset", "model", "n_per_class", "_rank", "method", *extra]
    return df.assign(_rank=rank).sort_values(by, kind="stable").drop(columns="_rank").reset_index(drop=True)


def share_columns(df: pd.DataFrame) -> list[str]:
    return sorted((c for c in df.columns if c.startswith("share_")), key=lambda c: int(c.split("_")[1]))


# ---------------------------------------------------------------------------------------------- results
def result_row(path: Path, dataset: str | None = None) -> dict:
    """One result JSON as a flat row (accuracy = the test accuracy of the LR picked on dev; NaN for a method
    whose training set was empty, `empty_trainset` True)."""
    path = Path(path)
    r = read_json(path)
    method = r.get("method") or re.sub(r"(-n\d+)?-seed\d+$", "", path.stem)
    row = {"dataset": r.get("dataset") or dataset or path.parent.parent.name, "model": r.get("model"),
           "method": method, "n_per_class": r.get("n_per_class"), "seed": r.get("seed"),
           "accuracy": math.nan if r["test_accuracy"] is None else r["test_accuracy"], "wall_seconds": r.get("wall_seconds"),
           "dev_accuracy": r.get("dev_accuracy"), "best_lr": r.get("best_lr"), "n_train": r.get("n_train"),
           "finetuned": r.get("finetuned"), "empty_trainset": bool(r.get("empty_trainset")), "result_file": str(path),
           "train_file": r.get("train_file")}
    for c, share in enumerate(r.get("test_prediction_shares") or []):
        row[f"share_{c}"] = share
    return row


def collect_results(runs_dir: str | Path = "runs", datasets: list[str] | None = None) -> pd.DataFrame:
    """One row per `runs_dir/<dataset>/results/*.json`, sorted by dataset, model, n, method order, seed."""
    runs_dir = Path(runs_dir)
    folders = [runs_dir / d for d in datasets] if datasets is not None else sorted(runs_dir.glob("*"))
    rows = [result_row(p, folder.name) for folder in folders for p in sorted((folder / "results").glob("*.json"))]
    df = pd.DataFrame(rows, columns=None if rows else TABLE_COLUMNS + EXTRA_COLUMNS)
    for col in ("n_per_class", "seed", "n_train"):
        df[col] = df[col].astype("Int64")
    return _sorted(df, ["seed"])


def missing_results(runs_dir, datasets, methods, seeds, model: str | None = None,
                    n_per_class: list[int] = (10,)) -> list[tuple[str, str, int, int]]:
    """(dataset, method, n, seed) whose result file is absent or was made with another model or budget."""
    missing = []
    for d in datasets:
        for m in methods:
            for n in n_per_class:
                for s in seeds:
                    path = result_file(runs_dir, d, m, n, s)
                    r = read_json(path) if path.is_file() else None
                    stale = r is not None and ((model and r.get("model") != model) or r.get("n_per_class") != n)
                    if r is None or stale:
                        missing.append((d, m, n, s))
    return missing


def select(df: pd.DataFrame, datasets=None, methods=None, seeds=None, model=None, n_per_class=None) -> pd.DataFrame:
    """The rows the notebook was asked about (None = no restriction)."""
    keep = pd.Series(True, index=df.index)
    for col, allowed in (("dataset", datasets), ("method", methods), ("seed", seeds)):
        if allowed is not None:
            keep &= df[col].isin(list(allowed))
    if model is not None:
        keep &= df["model"] == model
    if n_per_class is not None:
        keep &= df["n_per_class"].isin(list(n_per_class))
    return df[keep.fillna(False).astype(bool)].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ tables
def write_classification_table(df: pd.DataFrame, path_csv: str | Path) -> pd.DataFrame:
    """reports/tables/classification.csv: exactly TABLE_COLUMNS, one row per (dataset, model, method, n, seed)."""
    table = _sorted(df[TABLE_COLUMNS].copy(), ["seed"])
    table["accuracy"] = table["accuracy"].astype(float).round(4)  # float32 noise (0.69999998) out of the diffs
    Path(path_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path_csv, index=False, lineterminator="\n")
    return table


def compare_tables(committed_csv: str | Path, rerun_csv: str | Path) -> tuple[pd.DataFrame, str]:
    """A re-run's classification.csv against the committed one: per run, both accuracies and the difference.

    Returns (rows with committed/rerun accuracy in % and delta in points, a markdown report ending in a verdict).
    Runs in only one of the two tables are listed with the other side empty. On the machine that made the
    committed results the re-run is identical (same params and seed, same texts); elsewhere floating-point
    order (BLAS kernels, thread count) can flip a token in a generated text and so move an accuracy.
    """
    keys = ["dataset", "model", "method", "n_per_class", "seed"]
    a, b = (pd.read_csv(p)[keys + ["accuracy"]] for p in (committed_csv, rerun_csv))
    skipped = sorted(set(a.dataset) - set(b.dataset))  # e.g. rtpolarity, without a data directory
    a = a[a.dataset.isin(set(b.dataset))]
    both = a.merge(b, on=keys, how="outer", suffixes=("_committed", "_rerun"), indicator=True)
    rows = both.assign(committed=both.accuracy_committed * 100, rerun=both.accuracy_rerun * 100)
    rows["delta"] = rows.rerun - rows.committed
    rows = _sorted(rows[keys + ["committed", "rerun", "delta", "_merge"]], ["seed"])
    same = rows[(rows._merge == "both")]
    # an empty training set has no accuracy on either side: equal
    equal = (same.delta.abs() < 1e-6) | (same.committed.isna() & same.rerun.isna())
    lines = ["| dataset | method | n | seed | committed (%) | re-run (%) | Δ (points) |", "|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        cell = [format_number(v, ".1f") for v in (r.committed, r.rerun, r.delta)]
        lines.append(f"| {r.dataset} | {r.method} | {r.n_per_class} | {r.seed} | " + " | ".join(cell) + " |")
    only = rows[rows._merge != "both"]
    if equal.all() and only.empty:
        verdict = f"Identical: all {len(same)} accuracies equal the committed ones."
    else:
        worst = same.delta.abs().max()
        verdict = (f"{int((~equal).sum())} of {len(same)} accuracies differ from the committed ones (largest "
                   f"|Δ| {format_number(worst, '.1f')} points)" + (f"; {len(only)} runs are in one table only"
                                                                     if len(only) else "") +
                   ". Same machine and code should give identical numbers; on another CPU or library build, "
                   "floating-point order can change a generated token and so a set, and the quick runs (one seed, 5 "
                   "texts per class) move by several points with such a change (their spread across seeds: "
                   "reports/README.md, the quick profile).")
    if skipped:
        verdict += f" Not re-run: {', '.join(skipped)} (its committed numbers are not compared)."
    return rows.drop(columns="_merge"), "\n".join(lines + ["", verdict])


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof=1; NaN for one seed) over seeds per (dataset, model, method, n_per_class).

    majority_share is the mean over seeds of the largest test prediction share: near 1 the classifier
    predicts one class for everything, whatever its accuracy says.
    """
    shares = share_columns(df)
    data = df.assign(majority_share=df[shares].max(axis=1) if shares else math.nan,
                     empty_trainset=df["empty_trainset"].fillna(False).astype(bool) if "empty_trainset" in df else False)
    out = (data.groupby(KEYS, dropna=False, sort=False)
           .agg(accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"), n_seeds=("accuracy", "size"),
                empty_runs=("empty_trainset", "sum"),
                dev_accuracy_mean=("dev_accuracy", "mean"), majority_share=("majority_share", "mean"),
                n_train_mean=("n_train", "mean"), wall_seconds_mean=("wall_seconds", "mean"))
           .reset_index())
    return _sorted(out)


def format_accuracy(mean: float, std: float, empty_runs: int = 0, runs: int = 0) -> str:
    """67.5 ± 9.2 (percent); one seed has no spread: 67.5 ± –. A cell with a run whose training set was empty
    shows no number: its mean would be that of the other runs only."""
    if empty_runs:
        return "EMPTY set" + (f" ({int(empty_runs)} of {int(runs)} runs)" if runs and empty_runs < runs else "")
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f} ± " + ("–" if pd.isna(std) else f"{100 * std:.1f}")


def format_number(value, fmt: str) -> str:
    """A table cell: the number in `fmt`, or – when there is none (NaN)."""
    return "–" if pd.isna(value) else format(value, fmt)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def markdown_summary(df: pd.DataFrame, title: str = "Classification: test accuracy (%)") -> str:
    """One methods × datasets table per (model, n_per_class), then the per-cell seeds and collapse check."""
    summary = summary_table(df)
    parts = [f"## {title}", "",
             "Mean ± std over seeds (– : a single seed); the LR of fine-tuned methods is picked on dev only."]
    if summary.empty:
        return "\n".join(parts + ["", "No results yet."]) + "\n"
    for (model, n), block in summary.groupby(["model", "n_per_class"], dropna=False, sort=False):
        datasets = list(dict.fromkeys(block["dataset"]))
        cells = {(r.dataset, r.method): format_accuracy(r.accuracy_mean, r.accuracy_std, r.empty_runs, r.n_seeds)
                 for r in block.itertuples()}
        rows = [[m] + [cells.get((d, m), "") for d in datasets] for m in ordered_methods(block["method"])]
        parts += ["", f"### {model}, n = {n} per class", "", _markdown(["method"] + datasets, rows)]
    details = [[r.dataset, r.model, r.n_per_class, r.method, r.n_seeds,
                format_accuracy(r.accuracy_mean, r.accuracy_std, r.empty_runs, r.n_seeds),
                format_number(100 * r.dev_accuracy_mean, ".1f"),
                format_number(r.majority_share, ".2f"), format_number(r.n_train_mean, ".3g"),  # a mean: 27.3
                format_number(r.wall_seconds_mean, ".0f")]
               for r in summary.itertuples()]
    header = ["dataset", "model", "n", "method", "seeds", "test acc. (%)", "dev acc. (%)", "majority share",
              "train texts", "wall s"]
    parts += ["", "### Details", "", "majority share: the largest share of one predicted class on test (1.00 = "
              "everything predicted as one class); train texts: the training set's size after the filter; EMPTY "
              "set: the filter kept nothing, there is no fine-tuned model and no accuracy.", "", _markdown(header, details)]
    return "\n".join(parts) + "\n"


def write_markdown_summary(df: pd.DataFrame, path_md: str | Path, **kw) -> str:
    text = markdown_summary(df, **kw)
    Path(path_md).parent.mkdir(parents=True, exist_ok=True)
    Path(path_md).write_text(text)
    return text


# ----------------------------------------------------------------------------------------------- figures
@contextlib.contextmanager
def fixed_jitter(seed: int = 0):
    """seaborn's strip-plot jitter draws from NumPy's global generator: seed it for one plot, so that a rerun
    writes the same figure (git stays clean), and give the caller's state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _save(fig, path_png: str | Path):
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
    return fig


def plot_classification(df: pd.DataFrame, path_png: str | Path):
    """Bars: mean test accuracy per method, one hue per dataset, error bars = std over seeds; dots = seeds."""
    import seaborn as sns  # heavy: imported where used, not at every CLI start
    from matplotlib.figure import Figure

    data = df.assign(accuracy_pct=100 * df["accuracy"].astype(float))
    settings = list(dict.fromkeys(zip(data["model"], data["n_per_class"]))) or [(None, None)]
    width = max(6.0, 0.8 * data["method"].nunique() * max(1, data["dataset"].nunique()) + 2)
    fig = Figure(figsize=(width, 3.8 * len(settings)))
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    datasets = list(dict.fromkeys(data["dataset"]))
    for ax, (model, n) in zip(axes, settings):
        sub = data[(data["model"] == model) & (data["n_per_class"] == n)]
        if sub.empty:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            continue
        order = ordered_methods(sub["method"])
        common = dict(data=sub, x="method", y="accuracy_pct", hue="dataset", order=order, hue_order=datasets, ax=ax)
        sns.barplot(**common, errorbar="sd", capsize=0.15, alpha=0.75, err_kws={"linewidth": 1})
        with fixed_jitter():
            sns.stripplot(**common, dodge=True, palette={d: "0.15" for d in datasets}, size=3.5, legend=False)
        ax.set(ylim=(0, 100), xlabel="", ylabel="test accuracy (%)", title=f"{model}, n = {n} per class")
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path_png)


def generation_diagnostics(run_dir: str | Path) -> pd.DataFrame:
    """A GRADMM run's history.jsonl: one row per (class, batch, outer iteration t) with the ADMM diagnostics."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "history.jsonl")
    df = pd.DataFrame(rows)
    for col in HISTORY_COLUMNS:  # end_only (no projection) runs record no Z-step quantities
        if col not in df:
            df[col] = math.nan
    metrics = run_dir / "generate_metrics.json"
    names = [c["class"] for c in read_json(metrics)["classes"]] if metrics.is_file() else []
    df["class_name"] = [names[c] if isinstance(c, int) and c < len(names) else str(c) for c in df["class"]]
    df["run"] = run_dir.name
    first = ["run", "class_name"] + HISTORY_COLUMNS
    return df[first + [c for c in df.columns if c not in first]]


HEALTH_PANELS = [  # (title, columns drawn in it)
    ("match loss (cosine distance)", ["f_X", "f_Z"]),
    ("share of tokens changed by the Z-step", ["changed_fraction"]),
    ("log-perplexity of Z", ["logppl_Z"]),
    ("X-gradient norm: match vs penalty", ["grad_norm_match", "grad_norm_penalty"]),
    ("primal residual ‖X − Z‖", ["primal_residual"]),
]


def plot_generation_health(df: pd.DataFrame, path_png: str | Path, title: str | None = None):
    """Per outer iteration, mean over batches (band = std) per class: is the run matching and settling?"""
    import seaborn as sns  # heavy: imported where used, not at every CLI start
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3).ravel()
    for ax, (name, cols) in zip(axes, HEALTH_PANELS):
        long = df.melt(id_vars=["class_name", "batch", "t"], value_vars=cols, var_name="quantity").dropna()
        if long.empty:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(long, x="t", y="value", hue="class_name", style="quantity" if len(cols) > 1 else None,
                         errorbar="sd", marker="o", ax=ax)
            if len(cols) > 1:  # the panels with two quantities carry the legend (classes and line styles)
                ax.legend(fontsize=7)
            else:
                ax.get_legend().remove()
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=name, xlabel="outer iteration t", ylabel="")
    axes[-1].axis("off")
    fig.suptitle(title or (df["run"].iloc[0] if len(df) else "generation"))
    fig.tight_layout()
    return _save(fig, path_png)


# ------------------------------------------------------------------------------------ run directories
def generator_of(method: str) -> str | None:
    """The GRADMM variant a method's texts come from (gradmm_no_filter -> gradmm), or None for baselines."""
    base = method.removesuffix("_no_filter")
    return base if base in GENERATORS else None


def generation_run_dirs(runs_dir: str | Path, datasets: list[str]) -> list[Path]:
    """Every finished generation run (a history.jsonl) under runs_dir/<dataset>/generated/."""
    return sorted(p.parent for d in datasets for p in (Path(runs_dir) / d / "generated").glob("*/history.jsonl"))


def health_figure_path(figures_dir: str | Path, dataset: str, run_name: str) -> Path:
    return Path(figures_dir) / "generation" / f"{dataset}-{run_name}.png"


SUMMARY_COLUMNS = ["dataset", "generator", "seed", "class", "n_batches", "f_X_end", "f_Z", "f_Z_min", "f_Z_max",
                   "changed_at_end", "log_perplexity", "target_snr", "raw", "label_consistent"]


def _first_filter_stats(trainsets: Path, method: str, seed: int) -> dict | None:
    """The filter counts of a generator's raw texts: the same raw set feeds every n, so any n's file will do."""
    for path in sorted(trainsets.glob(f"{method}-n*-seed{seed}_filter.json")):
        return read_json(path)
    for path in sorted(trainsets.glob(f"{method}-n*-seed{seed}.info.json")):
        info = read_json(path)
        if "filter" in info:
            return info["filter"]
    return None


def _filter_counts(stats: dict | None, c: int) -> dict:
    """Class c's raw and label-consistent counts (NaN when unknown: no filter record, or filter.label_filter off)."""
    stats = stats or {}
    return {key: stats[key][c] if key in stats else math.nan for key in ("raw", "label_consistent")}


def generation_summary(runs_dir: str | Path, datasets: list[str]) -> pd.DataFrame:
    """Per (dataset, generator, seed, class): how well the texts match, how settled they are, how many keep their label.

    From the small committed records (no history.jsonl needed): a GRADMM run's generate_metrics.json (per batch:
    f(X) at the last step, f(Z) of the projected tokens, the share of tokens the last Z-step changed) and the
    filter counts of its raw texts; the LM-generation baselines have filter counts only.
    """
    rows = []
    for dataset in datasets:
        root = Path(runs_dir) / dataset
        names: list[str] = []  # the class names, from a GRADMM record (the baselines' records hold indices only)
        for metrics_path in sorted((root / "generated").glob("*-seed*/generate_metrics.json")):
            generator, seed = metrics_path.parent.name.rsplit("-seed", 1)
            metrics = read_json(metrics_path)
            stats = _first_filter_stats(root / "trainsets", generator, int(seed))
            names = [cls["class"] for cls in metrics["classes"]]
            for c, cls in enumerate(metrics["classes"]):
                f_z = pd.Series(cls["f_Z"], dtype=float)
                rows.append({"dataset": dataset, "generator": generator, "seed": int(seed), "class": cls["class"],
                             "n_batches": len(f_z),
                             "f_X_end": pd.Series(cls.get("f_X_final") or [], dtype=float).mean(),
                             "f_Z": f_z.mean(), "f_Z_min": f_z.min(), "f_Z_max": f_z.max(),
                             "changed_at_end": pd.Series(cls.get("last_changed_fraction") or [], dtype=float).mean(),
                             "log_perplexity": cls["mean_log_perplexity"],
                             "target_snr": math.nan if cls.get("snr") is None else cls["snr"],  # DP runs only
                             **_filter_counts(stats, c)})
        for method in registry.names("lm_text"):  # LM-written texts, through the same label filter
            seeds = sorted({int(m.group(1)) for p in (root / "trainsets").glob(f"{method}-n*-seed*.info.json")
                            if (m := re.search(r"-seed(\d+)\.info\.json$", p.name))})
            for seed in seeds:
                stats = _first_filter_stats(root / "trainsets", method, seed)
                for c in range(len(stats["raw"]) if stats else 0):
                    name = names[c] if c < len(names) else str(c)
                    rows.append({"dataset": dataset, "generator": method, "seed": seed, "class": name, "n_batches": 0,
                                 **_filter_counts(stats, c)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _span(values: pd.Series, fmt: str) -> str:
    """min–max of a column (one value: that value; none: –)."""
    values = values.dropna()
    if values.empty:
        return "–"
    lo, hi = format(values.min(), fmt), format(values.max(), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def generation_summary_markdown(df: pd.DataFrame, title: str = "Generation summary") -> str:
    """One row per (dataset, generator): ranges over its seeds and classes (f's: the per-seed batch means)."""
    parts = [f"## {title}", "",
             "f(X) end: the match loss (1 − cos, in [0, 2], to the class's real gradient) of the continuous batch "
             "at the last step; f(Z): the same for the projected tokens; changed at end: the share of tokens the "
             "last Z-step changed (near 1: not settled); target SNR: with DP, ‖clean clipped target‖ / ‖noise‖ "
             "(the f's are then to the noised target); label-consistent: raw texts the model itself assigns their "
             "class, per class in the classes' order. Ranges: min–max over seeds and classes, each a mean over "
             "batches."]
    if df.empty:
        return "\n".join(parts + ["", "No generation records."]) + "\n"
    rows = []
    for (dataset, generator), block in df.groupby(["dataset", "generator"], sort=False):
        per_class = [f"{_span(b['label_consistent'], '.0f')} of {_span(b['raw'], '.0f')}"
                     if b["label_consistent"].notna().any() else "–" for _, b in block.groupby("class", sort=False)]
        rows.append([dataset, generator, block["seed"].nunique(), _span(block["f_X_end"], ".3f"),
                     _span(block["f_Z"], ".3f"), _span(block["changed_at_end"], ".2f"),
                     _span(block["log_perplexity"], ".2f"), _span(block["target_snr"], ".1e"), " / ".join(per_class)])
    order = {m: i for i, m in enumerate(ordered_methods([r[1] for r in rows]))}
    rows.sort(key=lambda r: (r[0], order[r[1]]))
    header = ["dataset", "generator", "seeds", "f(X) end", "f(Z)", "changed at end", "log-ppl", "target SNR",
              "label-consistent"]
    return "\n".join(parts + ["", _markdown(header, rows)]) + "\n"


def write_generation_summary(df: pd.DataFrame, path_csv: str | Path, path_md: str | Path, **kw) -> str:
    Path(path_csv).parent.mkdir(parents=True, exist_ok=True)
    df.round(4).to_csv(path_csv, index=False, lineterminator="\n")
    text = generation_summary_markdown(df, **kw)
    Path(path_md).write_text(text)
    return text
