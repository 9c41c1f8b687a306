"""Does the fast path (bf16 on the CPU's matrix units, batches stepped together) keep the quality study's
accuracy? Compares a cell run on it with the study's fp32 cell of the same method: test accuracy over the same
3 generation × 5 fine-tuning seeds, the spread between generated sets, f(Z) of the generated batches.

The fast cell is run with (about 20 CPU-minutes for tweets gradmm, 2 workers):
    gradmm study --params studies/quality/params.yaml --task studies/quality/tasks/tweets/data --method gradmm \\
      --out studies/quality-fast/tweets/gradmm --set model.dtype=bfloat16 --set generate.parallel_batches=2
Usage: python scripts/fast_path_check.py [--dataset tweets] [--method gradmm] [--out CSV]
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import ttest_ind

from gradmm.reporting.variants import collect, seed_spread

STUDY, FAST = Path("studies/quality"), Path("studies/quality-fast")


def batch_f_Z(cell: Path) -> float:
    """Mean f(Z) over every generated batch of the cell (all generation seeds, all classes)."""
    values = [f for path in sorted(cell.glob("generated-g*/generate_metrics.json"))
              for c in json.loads(path.read_text())["classes"] for f in c["f_Z"]]
    return sum(values) / len(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="tweets")
    ap.add_argument("--method", default="gradmm")
    ap.add_argument("--out", default="reports/tables/quality_fast_path.csv")
    args = ap.parse_args()
    cells = {"fp32, one batch at a time (the study)": STUDY, "bf16, 2 batches stepped together": FAST}
    frames = []
    for path, study in cells.items():
        df = collect(study)
        df = df[(df.dataset == args.dataset) & (df.method == args.method)].assign(path=path)
        if df.empty:
            raise SystemExit(f"no results of {args.dataset}/{args.method} under {study}/: run the cell first")
        frames.append(df)
    spread = seed_spread(pd.concat(frames).assign(method=lambda d: d.path))
    spread["f_Z_mean"] = [batch_f_Z(study / args.dataset / args.method) for study in cells.values()]
    spread["generation_config"] = [json.loads((study / args.dataset / args.method / "generated-g0" / "run_config.json")
                                              .read_text())["model"]["dtype"] for study in cells.values()]
    p = ttest_ind(frames[0].accuracy, frames[1].accuracy, equal_var=False).pvalue
    spread["welch_p_vs_study"] = [float("nan"), p]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    spread.round(4).to_csv(args.out, index=False)
    print(spread.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
