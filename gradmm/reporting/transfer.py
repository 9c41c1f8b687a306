"""The transfer study's report: reports/tables/transfer.{csv,md} and reports/figures/transfer.png (`gradmm transfer-report`,
notebooks/03_transfer.ipynb)."""

from pathlib import Path

import pandas as pd

from gradmm.config import TransferConfig
from gradmm.io.records import read_json
from gradmm.methods.registry import ordered_methods
from gradmm.reporting.classification import fixed_jitter, format_accuracy, format_number


def _row(r: dict) -> dict:
    """A result JSON as one row of transfer.csv."""
    shares = r.get("test_prediction_shares") or [float("nan")]
    return ({k: r.get(k) for k in ("dataset", "source", "target", "method", "n_per_class", "seed", "dev_accuracy",
                                   "n_train", "wall_seconds")}
            | {"accuracy": r["test_accuracy"], "majority_share": max(shares),
               "empty_trainset": bool(r.get("empty_trainset"))})


def collect(transfer_dir) -> pd.DataFrame:
    """Every result under <transfer_dir>/<dataset>/<target>/<method>/ as one row."""
    return pd.DataFrame([_row(read_json(f))
                         for f in sorted(Path(transfer_dir).glob("*/*/*/result-s*.json"))])


def source_rows(study_dir, cfg: TransferConfig) -> pd.DataFrame:
    """The source model trained on the same sets: the study's own results at this budget and these seeds,
    in collect()'s columns (target = the study's model, source = "study"), for the by-target comparison."""
    rows = []
    for d in cfg.datasets:
        for m in cfg.methods:
            for s in cfg.seeds:
                f = Path(study_dir) / d / m / f"result-n{cfg.n_per_class}-g{cfg.generation_seed}-s{s}.json"
                if not f.is_file():
                    continue
                r = read_json(f)
                rows.append(_row({**r, "dataset": d, "source": "study", "target": r["model"], "method": m,
                                  "n_per_class": cfg.n_per_class, "seed": s}))
    return pd.DataFrame(rows)


def by_target(summ: pd.DataFrame) -> list[str]:
    """One markdown table per dataset: methods down, targets across (test mean ± std), so a method's rank
    can be followed from one model to the next."""
    lines = []
    for d, part in summ.groupby("dataset", sort=True):
        targets = list(dict.fromkeys(part.target))
        lines += [f"### {d}", "", "| method | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for m in ordered_methods(part.method.unique()):
            cells = {r.target: format_accuracy(r.mean, r.std, r.empty_runs, r.runs)
                     for r in part[part.method == m].itertuples()}
            lines.append(f"| {m} | " + " | ".join(cells.get(t, "") for t in targets) + " |")
        lines.append("")
    return lines


def summary(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(empty_trainset=df["empty_trainset"] if "empty_trainset" in df else False)  # older frames
    g = df.groupby(["dataset", "target", "n_per_class", "method"])
    out = g.agg(runs=("accuracy", "size"), mean=("accuracy", "mean"), std=("accuracy", "std"),
                empty_runs=("empty_trainset", "sum"),
                dev_mean=("dev_accuracy", "mean"), majority_share=("majority_share", "mean"),
                wall_seconds=("wall_seconds", "mean")).reset_index()
    rank = {m: i for i, m in enumerate(ordered_methods(out.method.unique()))}
    return out.sort_values(["dataset", "target", "method"], key=lambda c: c.map(rank) if c.name == "method" else c)


def markdown(summ: pd.DataFrame) -> str:
    lines = ["# Transfer: test accuracy (%) of each target model at equal budget", "",
             "Generated sets come from the study's model (column `source` of transfer.csv); real subsets and "
             "in-context methods belong to the target. `majority` = share of test predictions in the most "
             "predicted class (%). The MiniLM probe is deterministic: a fixed set gets one run.", "",
             "| dataset | target | n | method | runs | test mean ± std | dev mean | majority |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summ.itertuples():
        dev = "" if r.dev_mean != r.dev_mean else f"{100 * r.dev_mean:.1f}"
        lines.append(f"| {r.dataset} | {r.target} | {r.n_per_class} | {r.method} | {r.runs} | "
                     f"{format_accuracy(r.mean, r.std, r.empty_runs, r.runs)} | {dev} | "
                     f"{format_number(100 * r.majority_share, '.0f')} |")
    lines += ["", "## By target", "",
              "Test mean ± std. A column marked with the study's model (source `study` in transfer.csv) is the source "
              "model fine-tuned on the same sets in the variants study (same seeds); blank: not run for that target.",
              ""] + by_target(summ)
    return "\n".join(lines).rstrip() + "\n"


def plot(df: pd.DataFrame, path_png):
    """Test accuracy per method (mean, ± sd bars, every run as a dot): a row of panels per dataset, a column per
    target."""
    import seaborn as sns  # heavy: imported where used, not at every CLI start
    from matplotlib.figure import Figure

    datasets, targets = list(dict.fromkeys(df.dataset)), list(dict.fromkeys(df.target))
    order = ordered_methods(df.method.unique())
    fig = Figure(figsize=(4.5 * len(targets), (0.35 * len(order) + 1.2) * len(datasets)))
    axes = fig.subplots(len(datasets), len(targets), squeeze=False, sharey=True)
    for (i, d), (j, t) in ((a, b) for a in enumerate(datasets) for b in enumerate(targets)):
        ax = axes[i][j]
        part = df[(df.dataset == d) & (df.target == t)].assign(accuracy=lambda x: 100 * x.accuracy)
        if part.empty:
            ax.set_axis_off()
            continue
        sns.barplot(part, x="accuracy", y="method", order=order, errorbar="sd", ax=ax, color="#9ecae1")
        with fixed_jitter():
            sns.stripplot(part, x="accuracy", y="method", order=order, ax=ax, color="k", size=3)
        ax.set(title=f"{d} → {t}", xlabel="test accuracy (%)", ylabel="", xlim=(0, 100))
    fig.tight_layout()
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
    return fig


def write_report(transfer_dir, reports_dir="reports", study_dir=None, cfg: TransferConfig | None = None,
                 name: str = "transfer") -> pd.DataFrame:
    """tables/<name>.csv (every run), tables/<name>.md (summary) and figures/<name>.png. With study_dir and cfg,
    the source model's own results on the same sets join as one more target."""
    df = collect(transfer_dir)
    if df.empty:
        raise FileNotFoundError(f"no transfer results under {transfer_dir}: run `gradmm transfer` first")
    if study_dir is not None and cfg is not None:
        src = source_rows(study_dir, cfg)
        df = pd.concat([src, df], ignore_index=True) if len(src) else df
    tables = Path(reports_dir) / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    df.to_csv(tables / f"{name}.csv", index=False, lineterminator="\n")
    (tables / f"{name}.md").write_text(markdown(summary(df)))
    plot(df, Path(reports_dir) / "figures" / f"{name}.png")
    return df
