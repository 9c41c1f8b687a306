"""Does the machine move the quality study's accuracies? The study's GPU cells were fine-tuned on an H200 and
its later cells on this project's CPU. This re-fine-tunes committed GPU training sets here, with the same
settings and seeds, and writes each run's accuracy on both machines beside each other.

Usage: python scripts/platform_check.py [--cells tweets/gradmm_swap_start/g0 tweets/random_real] [--out CSV]
A cell is <dataset>/<method>[/g<G>]: generated sets need their generation seed, real subsets have one per seed.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

STUDY = Path("studies/quality")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=["tweets/gradmm_swap_start/g0", "tweets/random_real"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default="reports/tables/quality_platform_check.csv")
    args = ap.parse_args()
    rows = []
    gradmm = Path(sys.executable).parent / "gradmm"
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            dataset, method, *gen = cell.split("/")
            folder = STUDY / dataset / method
            for seed in args.seeds:
                name = f"n20-{gen[0]}" if gen else f"n20-s{seed}"
                g = gen[0] if gen else "g0"  # a real subset is the same for every generation seed
                committed = json.loads((folder / f"result-n20-{g}-s{seed}.json").read_text())
                out = Path(tmp) / f"{dataset}-{method}-{seed}.json"
                subprocess.run([str(gradmm), "finetune", "--params", str(STUDY / "params.yaml"), "--task",
                                str(STUDY / "tasks" / dataset / "data"), "--method", method, "--train",
                                str(folder / f"trainset-{name}.jsonl"), "--seed", str(seed), "--n-per-class", "20",
                                "--out", str(out)], check=True)
                here = json.loads(out.read_text())
                rows.append({"dataset": dataset, "method": method, "train_file": f"trainset-{name}.jsonl",
                             "seed": seed, "accuracy_study": committed["test_accuracy"],
                             "accuracy_here": here["test_accuracy"],
                             "difference": here["test_accuracy"] - committed["test_accuracy"]})
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.round(4).to_csv(args.out, index=False)
    print(df.round(3).to_string(index=False))
    print(df.groupby(["dataset", "method"]).difference.agg(["mean", "std"]).mul(100).round(1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
