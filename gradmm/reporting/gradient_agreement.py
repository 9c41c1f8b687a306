"""The gradient-agreement report: how well each gradient distance of gradmm.experiments.gradient_agreement ranks
the training sets by the accuracy they fine-tuned to (`gradmm gradient-agreement-report`)."""

from pathlib import Path

import pandas as pd

# measure name -> what it is, for the tables (the order is the tables' order)
MEASURES = {
    "texts": "set size (texts after the filter)",
    "head_paper_class": "output head, paper's loss (the matched f), per class",
    **{f"{loss}_{group}_{form}": f"{where}, {what}, {'per class' if form == 'class' else 'whole set'}"
       for loss, what in (("paper", "paper's loss"), ("finetune", "fine-tuning's loss"))
       for group, where in (("last_block", "last block"), ("blocks", "all blocks"), ("all", "all weights"))
       for form in ("class", "whole")},
}


def partial_rank_correlation(x: pd.Series, y: pd.Series, z: pd.Series) -> float:
    """Spearman's ρ of x and y with z held fixed: the correlation of the ranks' residuals after a linear fit on
    z's ranks (NaN where z's ranks leave nothing to correlate)."""
    import numpy as np

    rx, ry, rz = (s.rank().to_numpy(dtype=float) for s in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (rx, ry)]
    norm = np.linalg.norm(res[0]) * np.linalg.norm(res[1])
    return float(res[0] @ res[1] / norm) if norm > 1e-12 else float("nan")


def correlations(sets: pd.DataFrame) -> pd.DataFrame:
    """Spearman's ρ (and its p) of every measure with test and dev accuracy over the sets of each dataset, and ρ
    with test accuracy at a fixed set size (`rho_test_given_texts`: the filter leaves some sets short, and a
    bigger set has both a steadier gradient and more to train on). A useful distance has ρ < 0 (closer to real
    text's gradient, better accuracy); the set size ρ > 0."""
    from scipy.stats import spearmanr

    rows = []
    for dataset, part in sets.groupby("dataset", sort=False):
        for col in [m for m in MEASURES if m in sets.columns]:
            ok = part[col].notna()
            test = spearmanr(part.loc[ok, col], part.loc[ok, "test_accuracy"])
            dev = spearmanr(part.loc[ok, col], part.loc[ok, "dev_accuracy"])
            rows.append({"dataset": dataset, "measure": col, "what": MEASURES[col], "sets": int(ok.sum()),
                         "rho_test": float(test.statistic), "p_test": float(test.pvalue),
                         "rho_dev": float(dev.statistic), "p_dev": float(dev.pvalue),
                         "rho_test_given_texts": float("nan") if col == "texts" else partial_rank_correlation(
                             part.loc[ok, col], part.loc[ok, "test_accuracy"], part.loc[ok, "texts"])})
    return pd.DataFrame(rows)


def markdown(corr: pd.DataFrame) -> str:
    """ρ with test accuracy, one column per dataset (p in brackets; ρ at a fixed set size after the slash), one row
    per measure."""
    datasets = list(dict.fromkeys(corr.dataset))
    sets = corr.groupby("dataset", sort=False).sets.max()
    lines = ["| measure | " + " | ".join(f"{d} ({sets[d]} sets)" for d in datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for measure, part in corr.groupby("measure", sort=False):
        cells = {r.dataset: f"{r.rho_test:+.2f} (p {r.p_test:.2f})"
                 + ("" if pd.isna(r.rho_test_given_texts) else f" / {r.rho_test_given_texts:+.2f}")
                 for r in part.itertuples()}
        lines.append(f"| {MEASURES[measure]} | " + " | ".join(cells.get(d, "") for d in datasets) + " |")
    return "\n".join(lines) + "\n"


def plot(corr: pd.DataFrame, path_png: str | Path) -> None:
    """A heatmap of ρ with test accuracy, measures × datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = corr.pivot(index="measure", columns="dataset", values="rho_test")
    grid = grid.loc[[m for m in MEASURES if m in grid.index], list(dict.fromkeys(corr.dataset))]
    grid.index = [MEASURES[m] for m in grid.index]
    fig, ax = plt.subplots(figsize=(3.2 + 1.6 * grid.shape[1], 0.42 * len(grid) + 1.2))
    sns.heatmap(grid, annot=True, fmt="+.2f", cmap="RdBu", vmin=-1, vmax=1, cbar_kws={"label": "Spearman ρ"}, ax=ax)
    ax.set_title("Rank correlation with test accuracy over training sets\n(distance to dev gradient: ρ < 0 is useful)")
    ax.set_xlabel("")
    Path(path_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(set_tables: list[Path], out_csv: Path, out_md: Path, figure: Path) -> pd.DataFrame:
    sets = pd.concat([pd.read_csv(p) for p in set_tables], ignore_index=True)
    corr = correlations(sets)
    for path in (out_csv, out_md):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    corr.round(4).to_csv(out_csv, index=False)
    Path(out_md).write_text("Spearman's ρ of each distance to the dev split's gradient with the mean test accuracy "
                            "of the sets fine-tuned on (p in brackets; ρ < 0: a closer gradient goes with a better "
                            "set); after the slash, the same ρ with the set size held fixed (partial rank "
                            "correlation).\n\n" + markdown(corr))
    plot(corr, figure)
    return corr
