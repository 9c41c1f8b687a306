"""Tables of one GPU session's measurements (the raw files in a benchmarks/gpu-<date>/ folder).

    python benchmarks/summarize_gpu.py benchmarks/gpu-2026-11-26 [--cpu-variants reports/tables/variants.csv]

Reads what scripts/gpu/stage2.sh brought back (saved verbatim in the folder):
  paper_schedule_batch_starts.jsonl   log time of each batch start of the paper-schedule GRADMM cells
  paper_schedule_history.jsonl        ADMM health per outer step of the finished paper-schedule batches
  paper_smollm2_results.jsonl         fine-tuning results of the paper-smollm2 study's baseline cells
  full_profile_times.tsv              exit code, wall ms and DVC stage name of each full-profile command run
  xstep_rate_12_processes_mps.json    X-steps per second of 12 processes sharing the GPU through MPS
and prints markdown tables; --cpu-variants joins the GPU fine-tuning runs to the CPU study's same runs.
"""

import argparse
import json
from datetime import datetime
from pathlib import Path

import pandas as pd


def read_jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def batch_seconds(starts: pd.DataFrame) -> pd.DataFrame:
    """Seconds between consecutive batch starts of one worker: the wall time of each finished batch."""
    starts = starts.assign(t=[datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in starts.time])
    rows = []
    for (cell, log), part in starts.groupby(["cell", "log"]):
        part = part.sort_values("t")
        for (_, a), (_, b) in zip(part.iterrows(), part.iloc[1:].iterrows()):
            rows.append({"cell": cell, "class": a["class"], "batch": a.batch, "seconds": (b.t - a.t).total_seconds()})
    return pd.DataFrame(rows)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--cpu-variants", help="reports/tables/variants.csv: the CPU study's runs of the same cells")
    args = ap.parse_args(argv)
    d = Path(args.folder)
    out = []

    secs = batch_seconds(read_jsonl(d / "paper_schedule_batch_starts.jsonl"))
    out += ["Paper-schedule batches (B = 10, L = 27, 30 outer × 50 inner steps, 500 initial candidates), wall "
            "seconds per finished batch:", "", "| cell | class | batch | seconds |", "|---|---|---|---|"]
    out += [f"| {r.cell} | {r['class']} | {r.batch} | {r.seconds:.0f} |" for _, r in secs.iterrows()]

    hist = read_jsonl(d / "paper_schedule_history.jsonl")
    steps = sorted({0, 4, 9, 14, 19, 24, 29} & set(hist.t))
    g = hist[hist.t.isin(steps)].groupby("t")[["f_Z", "f_X", "changed_fraction", "logppl_Z", "primal_residual"]].mean()
    out += ["", f"ADMM health of the paper schedule, mean over the {hist.groupby(['cell', 'batch']).ngroups} finished "
            "batches, by outer step t:", "", "| t | f(Z) | f(X) | tokens changed | log-ppl Z | ‖X − Z‖ |",
            "|---|---|---|---|---|---|"]
    out += [f"| {t} | {r.f_Z:.3f} | {r.f_X:.3f} | {r.changed_fraction:.2f} | {r.logppl_Z:.2f} | {r.primal_residual:.2f} |"
            for t, r in g.iterrows()]

    times = pd.read_csv(d / "full_profile_times.tsv", sep="\t", names=["rc", "ms", "stage"])
    out += ["", f"Full-profile commands that finished ({len(times)}; exit code 0 = done), wall seconds:", "",
            "| stage | exit | seconds |", "|---|---|---|"]
    out += [f"| {r.stage} | {r.rc} | {r.ms / 1000:.0f} |" for r in times.itertuples()]

    rate = json.loads((d / "xstep_rate_12_processes_mps.json").read_text())
    out += ["", "X-steps per second, 12 processes together on MPS (SmolLM2 shape, random weights): "
            + ", ".join(f"{v:.1f}" for v in rate.values())]

    res = read_jsonl(d / "paper_smollm2_results.jsonl")
    if args.cpu_variants:
        cpu = pd.read_csv(args.cpu_variants)
        cpu = cpu[cpu.dataset == "rtpolarity"].rename(columns={"accuracy": "cpu", "n_per_class": "n"})
        both = res.rename(columns={"test_accuracy": "gpu", "n_per_class": "n"}).merge(
            cpu[["method", "n", "seed", "cpu"]], on=["method", "n", "seed"], how="left")
        out += ["", "The same fine-tuning runs on the GPU and on the CPU (test accuracy %; llm_zero_shot_gen: 40 "
                "raw texts per class on the GPU, 20 on the CPU, so other training sets):", "",
                "| method | n | seed | GPU | CPU |", "|---|---|---|---|---|"]
        out += [f"| {r.method} | {r.n} | {r.seed} | {100 * r.gpu:.1f} | {100 * r.cpu:.1f} |" for r in both.itertuples()]
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
