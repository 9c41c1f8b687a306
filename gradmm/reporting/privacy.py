"""The privacy experiment's report: membership-inference, canary and DP-sweep tables and figures (notebooks/02_privacy_perplexity.ipynb)."""

from pathlib import Path

import numpy as np
import pandas as pd

from gradmm.experiments.privacy import dp_sweep_leakage, dp_sweep_rows
from gradmm.io.records import read_json


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


def dp_sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    g = sweep.groupby(["dataset", "epsilon"])
    return pd.DataFrame({"runs": g.size(), "accuracy_mean": g.accuracy.mean(), "accuracy_std": g.accuracy.std(),
                         "snr": g.snr.first()}).reset_index().sort_values(["dataset", "epsilon"], ascending=[True, False])


def plot_dp_sweep(summary: pd.DataFrame, path_png):
    """Accuracy (mean ± std) and target SNR against ε, ε = ∞ drawn at the right edge."""
    from matplotlib.figure import Figure  # heavy: imported where used, not at every CLI start

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
