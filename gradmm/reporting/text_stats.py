"""Tables and figures of the texts themselves: perplexity, leakage and diversity of every training set (notebooks/02_privacy_perplexity.ipynb)."""

from pathlib import Path

import pandas as pd

from gradmm.experiments.text_stats import REFERENCES
from gradmm.methods.registry import ordered_methods


def perplexity_summary(df: pd.DataFrame) -> pd.DataFrame:
    """n, mean, median and std (ddof=1) of each log-perplexity column per (dataset, model, method)."""
    cols = [c for c in ("log_perplexity", "log_perplexity_conditioned") if c in df]
    g = df.groupby(["dataset", "model", "method"], sort=False)
    parts = {f"{c.replace('log_perplexity', 'logppl')}_{s}": g[c].agg(s)
             for c in cols for s in ("mean", "median", "std")}
    return pd.DataFrame({"n": g.size(), **parts}).reset_index()


def _order(methods) -> list[str]:
    present = list(dict.fromkeys(methods))
    return [m for m in REFERENCES if m in present] + ordered_methods(m for m in present if m not in REFERENCES)


def plot_perplexity(df: pd.DataFrame, path_png):
    """Boxen plots of the log-perplexity per method, one panel per (dataset, model), hue = the prefix."""
    import seaborn as sns  # heavy: imported where used, not at every CLI start
    from matplotlib.figure import Figure

    value_vars = [c for c in ("log_perplexity", "log_perplexity_conditioned") if c in df]
    long = df.melt(id_vars=["dataset", "model", "method"], value_vars=value_vars, var_name="prefix").dropna()
    long["prefix"] = long["prefix"].map({"log_perplexity": "none (BOS)", "log_perplexity_conditioned": "instruction"})
    panels = list(dict.fromkeys(zip(df["dataset"], df["model"])))
    order = _order(df["method"])
    fig = Figure(figsize=(7, (0.45 * len(order) + 1.5) * len(panels)))
    for ax, (d, m) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        sns.boxenplot(long[(long.dataset == d) & (long.model == m)], x="value", y="method", hue="prefix",
                      order=order, ax=ax)
        ax.set(title=f"{d}: {m}", xlabel="log-perplexity (mean token NLL, nats)", ylabel="")
    fig.tight_layout()
    return _save(fig, path_png)


def plot_privacy(df: pd.DataFrame, path_png):
    """Per dataset: n-gram overlap with the pool and nearest-pool-text similarity, the set beside a real holdout."""
    import seaborn as sns  # heavy: imported where used, not at every CLI start
    from matplotlib.figure import Figure

    ngram = [c for c in df if c.startswith("ngram") and c.endswith("_synthetic")]
    datasets, order = list(dict.fromkeys(df["dataset"])), _order(df["method"])
    fig = Figure(figsize=(12, (0.45 * len(order) + 1.5) * len(datasets)))
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    for (a1, a2), d in zip(axes, datasets):
        sub = df[df.dataset == d]
        panels = ((a1, [c for g in ngram for c in (g, g.replace("_synthetic", "_holdout"))],
                   "share of word n-grams found in the pool"),
                  (a2, ["nn_sim_mean_synthetic", "nn_sim_mean_holdout"],
                   "mean cosine similarity to the nearest pool text (MiniLM)"))
        for ax, cols, xlabel in panels:
            long = sub.melt(id_vars="method", value_vars=cols, var_name="measure")
            sns.barplot(long, x="value", y="method", hue="measure", order=order, ax=ax)
            ax.set(title=d, xlabel=xlabel, ylabel="", xlim=(0, 1))
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path_png)


def _save(fig, path_png):
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")  # a Figure without pyplot: the Agg canvas
    return fig


def write_text_report(perplexity: list[dict], leakage: list[dict], diversity: list[dict],
                      reports_dir="reports") -> dict:
    """tables/perplexity.csv (summary), tables/perplexity_texts.csv (one row per text), tables/privacy.csv
    (leakage + diversity, one row per dataset and method), figures/perplexity.png and figures/privacy.png.
    Returns the three tables as DataFrames (perplexity = the summary)."""
    tables, figures = Path(reports_dir) / "tables", Path(reports_dir) / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    texts = pd.DataFrame(perplexity)
    summ = perplexity_summary(texts)
    privacy = pd.DataFrame(leakage).merge(pd.DataFrame(diversity), on=["dataset", "method"], how="outer")
    rank = {m: i for i, m in enumerate(_order(privacy["method"]))}  # an outer merge sorts the keys: the report's order
    privacy = privacy.sort_values(["dataset", "method"], key=lambda c: c.map(rank) if c.name == "method" else c,
                                  kind="stable").reset_index(drop=True)
    texts.to_csv(tables / "perplexity_texts.csv", index=False, lineterminator="\n")
    summ.round(4).to_csv(tables / "perplexity.csv", index=False, lineterminator="\n")
    privacy.round(4).to_csv(tables / "privacy.csv", index=False, lineterminator="\n")
    plot_perplexity(texts, figures / "perplexity.png")
    plot_privacy(privacy, figures / "privacy.png")
    return {"perplexity": summ, "perplexity_texts": texts, "privacy": privacy}
