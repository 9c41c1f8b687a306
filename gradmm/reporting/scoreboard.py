"""Where the quality push stands against its goal: every setting of the quality studies on one table, and the pick.

The goal (the quality push's third): at n = 20 per class, a set whose test accuracy is at least the LM's own text
(`llm_zero_shot_gen`) + 5 points and at least real text (`random_real`) − 1 on rtpolarity and on tweets, and the
same direction on imdb (here: at least the LM's own text), with the setting chosen on the dev splits of rtpolarity
and tweets only.

A setting is a method with everything it ran with (the cell's run_config.json without the task): the same setting
run in two study folders (e.g. imdb's cells of a setting chosen on the other two) is one row. The bars are the
strictest the studies hold: per dataset, the best mean of any `llm_zero_shot_gen` setting (e.g. the LM text drawn
until both classes pass the label check) and of any `random_real` one. The pick is the candidate (a `gradmm*`
setting) run on both dev datasets with the best mean dev accuracy over them; the table gives it and every other
candidate, met or not.
"""

import json
from pathlib import Path

import pandas as pd

from gradmm.io.records import read_json
from gradmm.reporting.variants import collect, seed_spread

GOAL_N = 20
DEV_DATASETS = ("rtpolarity", "tweets")
HELD_OUT = "imdb"
LM_GAIN, REAL_SLACK = 0.05, 0.01


def settings(studies: list[Path]) -> "pd.DataFrame":
    """Every result at n = GOAL_N of the studies' cells, with `setting`: the first cell (study@method) run with the
    same settings, and `cells`: every such cell."""
    frames, by_key = [], {}
    for study in studies:
        df = collect(study)
        if df.empty:
            continue
        df = df[df.n_per_class == GOAL_N].copy()
        df["cell"] = [f"{Path(study).name}@{m}" for m in df.method]
        keys = {cell: _setting_key(Path(study) / cell[0] / cell[1]) for cell in set(zip(df.dataset, df.method))}
        df["key"] = [keys[cell] for cell in zip(df.dataset, df.method)]
        for key, cell in zip(df.key, df.cell):
            by_key.setdefault(key, [])
            if cell not in by_key[key]:
                by_key[key].append(cell)
        frames.append(df)
    if not frames:
        raise ValueError(f"no results at n = {GOAL_N} under {[str(s) for s in studies]}")
    df = pd.concat(frames, ignore_index=True)
    df["setting"] = [by_key[k][0] for k in df.key]
    df["cells"] = [", ".join(by_key[k]) for k in df.key]
    return df.drop(columns="key")


def _setting_key(cell: Path) -> str:
    config = cell / "run_config.json"
    if not config.is_file():
        return str(cell)  # a cell without its settings is a setting of its own
    values = read_json(config)
    values.pop("task", None)
    return json.dumps(values, sort_keys=True)


def scoreboard(df: "pd.DataFrame") -> tuple["pd.DataFrame", dict]:
    """Per setting × dataset: sets, runs, test mean and 95 % interval (the set as unit), dev mean, majority share,
    and the gains over the dataset's bars; with the bars, the dev pick and whether it meets the goal."""
    rows = []
    for (setting, dataset), part in df.groupby(["setting", "dataset"]):
        spread = seed_spread(part.assign(method=setting)).iloc[0]
        rows.append({"setting": setting, "method": part.method.iloc[0], "dataset": dataset, "cells": part.cells.iloc[0],
                     "sets": int(spread.sets), "runs": len(part), "mean": spread["mean"], "ci95_low": spread.ci95_low,
                     "ci95_high": spread.ci95_high, "dev_mean": part.dev_accuracy.mean(),
                     "majority_share_mean": part.majority_share.mean()})
    table = pd.DataFrame(rows)
    bars = {}
    for dataset, part in table.groupby("dataset"):
        lm, real = part[part.method == "llm_zero_shot_gen"], part[part.method == "random_real"]
        bars[dataset] = {"lm": _best(lm), "real": _best(real)}
    for bar in ("lm", "real"):
        table[f"gain_vs_{bar}"] = [r["mean"] - bars[r.dataset][bar][1] if bars[r.dataset][bar] else float("nan")
                                   for _, r in table.iterrows()]
    table["goal_met"] = [_meets(r) for _, r in table.iterrows()]
    candidates = table[table.method.str.startswith("gradmm")]
    dev = candidates[candidates.dataset.isin(DEV_DATASETS)].groupby("setting")
    both = dev.dataset.nunique()
    dev_score = dev.dev_mean.mean()[both[both == len(DEV_DATASETS)].index].sort_values(ascending=False)
    table["dev_score"] = table.setting.map(dev_score)
    pick = str(dev_score.index[0]) if len(dev_score) else None
    picked = table[table.setting == pick].set_index("dataset") if pick else pd.DataFrame()
    verdict = {"bars": bars, "pick": pick,
               "pick_goal": {d: bool(picked.goal_met[d]) if d in picked.index else None
                             for d in (*DEV_DATASETS, HELD_OUT)}}
    table = table.sort_values(["dev_score", "setting", "dataset"], ascending=[False, True, True], na_position="last")
    return table.reset_index(drop=True), verdict


def _best(part: "pd.DataFrame") -> tuple[str, float] | None:
    if part.empty:
        return None
    best = part.loc[part["mean"].idxmax()]
    return str(best.setting), float(best["mean"])


def _meets(row) -> bool | None:
    """The goal on this row's dataset: both bars on a dev dataset, at least the LM's own text on the held-out one."""
    if not row.method.startswith("gradmm") or row.gain_vs_lm != row.gain_vs_lm:
        return None
    if row.dataset == HELD_OUT:
        return bool(row.gain_vs_lm >= 0)
    return bool(row.gain_vs_lm >= LM_GAIN - 1e-9 and row.gain_vs_real >= -REAL_SLACK - 1e-9)


def markdown(table: "pd.DataFrame", verdict: dict) -> str:
    """The scoreboard as markdown: the bars, the pick and its verdict, then one row per candidate setting (by dev
    score) with test mean (gain over the LM bar / over the real bar) per dataset."""
    datasets = sorted(table.dataset.unique(), key=lambda d: (d not in DEV_DATASETS, d))
    lines = ["# The quality push against its goal", "",
             f"n = {GOAL_N} per class; test accuracy (%), mean over every generation × fine-tuning seed. Goal: ≥ the "
             f"LM's own text + {100 * LM_GAIN:.0f} and ≥ real text − {100 * REAL_SLACK:.0f} on "
             f"{' and '.join(DEV_DATASETS)}, ≥ the LM's own text on {HELD_OUT}; the setting chosen by its mean dev "
             f"accuracy over {' and '.join(DEV_DATASETS)}. Bars: the best setting of each baseline.", ""]
    for d in datasets:
        bar = verdict["bars"].get(d, {})
        lines.append(f"- {d}: LM text {_bar(bar.get('lm'))}; real text {_bar(bar.get('real'))}")
    met = verdict["pick_goal"]
    pick = verdict["pick"] or f"none (no candidate ran on {' and '.join(DEV_DATASETS)})"
    lines += ["", f"**Dev pick: {pick}**; goal met on " + ", ".join(
        f"{d}: {'yes' if v else 'no' if v is not None else 'not run'}" for d, v in met.items()) + ".", "",
        "| setting | dev score | " + " | ".join(datasets) + " | cells |", "|---|---|" + "---|" * len(datasets) + "---|"]
    candidates = table[table.method.str.startswith("gradmm")]
    for setting, part in candidates.groupby("setting", sort=False):
        by = part.set_index("dataset")
        score = part.dev_score.iloc[0]
        cells = [(f"{100 * by['mean'][d]:.1f} ({100 * by.gain_vs_lm[d]:+.1f} / {100 * by.gain_vs_real[d]:+.1f})"
                  + (" ✓" if by.goal_met[d] else "")) if d in by.index else "" for d in datasets]
        lines.append(f"| {setting} | {'' if score != score else f'{100 * score:.1f}'} | " + " | ".join(cells)
                     + f" | {part.cells.iloc[0]} |")
    lines += ["", "Each dataset's cell: test mean (gain over the LM-text bar / over the real-text bar, points); ✓: the "
              "goal met on that dataset. Dev score: the mean dev accuracy over "
              f"{' and '.join(DEV_DATASETS)} (blank: not run on both)."]
    return "\n".join(lines) + "\n"


def _bar(bar: tuple[str, float] | None) -> str:
    return "none" if bar is None else f"{100 * bar[1]:.1f} ({bar[0]})"


def write_scoreboard(studies: list[Path], out: Path) -> tuple["pd.DataFrame", dict]:
    """reports/tables/<out>.csv (every setting × dataset) and <out>.md (the candidates and the pick)."""
    table, verdict = scoreboard(settings(studies))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(markdown(table, verdict))
    return table, verdict
