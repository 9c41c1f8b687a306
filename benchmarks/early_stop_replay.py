"""What `generate.stop_patience` would save on recorded ADMM runs, replayed from their histories.

    python benchmarks/early_stop_replay.py [--patience 2 3 5 10] [--out FILE]

A batch's steps up to its stop are the very steps of the full run (every step is deterministic given the seed),
so the replay is exact for what the stop keeps among the Z-steps: the best f(Z) of the steps run. It leaves out
the final projection of the last iterate (from the stopped iterate instead of the last one). Histories: the
paper-schedule batches of the GPU session (30 outer × 50 inner steps), the quality study's `gradmm` cells
(6 × 6) and the committed quick runs (4 × 4).
"""

import argparse
import collections
import glob
import json
import statistics

from harness import emit  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)

SOURCES = {
    "paper schedule (GPU session, 30 × 50)": ["benchmarks/gpu-2026-11-26/paper_schedule_history.jsonl"],
    "quality study gradmm (6 × 6)": sorted(glob.glob("studies/quality/*/gradmm/generated-g*/history.jsonl")),
    "quick pipeline (4 × 4)": sorted(glob.glob("runs/*/generated/gradmm*-seed*/history.jsonl")),
}


def batches(paths: list[str]) -> list[list[float]]:
    """f(Z) by outer step of every batch in the history files (records of a batch are in step order)."""
    runs = collections.defaultdict(list)
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                runs[(path, r.get("cell"), r.get("class"), r["batch"])].append(r["f_Z"])
    return list(runs.values())


def replay(f_Z: list[float], patience: int) -> tuple[int, float]:
    """(outer steps run, best f(Z) among them) under the early stop."""
    best_t = 0
    for t, f in enumerate(f_Z):
        if f < f_Z[best_t]:
            best_t = t
        if t - best_t >= patience:
            return t + 1, f_Z[best_t]
    return len(f_Z), f_Z[best_t]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patience", type=int, nargs="+", default=[2, 3, 5, 10])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    lines = ["| histories | batches | patience | outer steps run | saved | same best Z-step | best f(Z) kept − full (mean, max) |",
             "|---|---|---|---|---|---|---|"]
    for name, paths in SOURCES.items():
        runs = batches(paths)
        if not runs:
            continue
        for p in args.patience:
            if p >= max(len(r) for r in runs):
                continue
            out = [replay(r, p) for r in runs]
            steps, full = sum(n for n, _ in out), sum(len(r) for r in runs)
            same = sum(kept == min(r) for (_, kept), r in zip(out, runs))
            gaps = [kept - min(r) for (_, kept), r in zip(out, runs)]
            lines.append(f"| {name} | {len(runs)} | {p} | {steps / len(runs):.1f} of {full / len(runs):.0f} | "
                         f"{1 - steps / full:.0%} | {same}/{len(runs)} | {statistics.mean(gaps):+.4f}, {max(gaps):+.4f} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
