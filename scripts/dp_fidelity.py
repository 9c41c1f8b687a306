"""Does the X-step still follow the DP class target? Label-row SNR and X-gradient cosine per ε (gradmm.experiments.dp_fidelity).

Reads params.yaml (data, model, generate, dp and privacy.epsilons) and writes OUT_DIR/dp_fidelity.{csv,md}.

    .venv/bin/python scripts/dp_fidelity.py                      # tweets and rtpolarity, ~10 CPU-minutes
    .venv/bin/python scripts/dp_fidelity.py --datasets tweets --draws 2
"""

import argparse
import csv
import dataclasses
import io
import sys
import time
from pathlib import Path

import torch

from gradmm.config import DataConfig, DPConfig, GenerateConfig, ModelConfig, load_config, read_params
from gradmm.core.data import check_dataset_name, load_task
from gradmm.core.models import check_model_name, load_model
from gradmm.experiments.dp_fidelity import COLUMNS, check_settings, measure
from gradmm.io.records import write_text
from gradmm.reporting.dp_fidelity import markdown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--datasets", nargs="+", default=["tweets", "rtpolarity"])
    ap.add_argument("--draws", type=int, default=5, help="noise draws per ε and class")
    ap.add_argument("--batches", type=int, default=2, help="starting batches X per kind and class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="reports/tables")
    args = ap.parse_args(argv)
    try:
        data = load_config(DataConfig, "data", args.params)
        model_cfg = load_config(ModelConfig, "model", args.params)
        gen = load_config(GenerateConfig, "generate", args.params)
        dp = load_config(DPConfig, "dp", args.params)
        epsilons = [float(e) for e in (read_params(args.params).get("privacy") or {}).get("epsilons") or []]
        check_settings(epsilons, args.draws, dp.mechanism, dp.relation, dp.delta, dp.clip_norm)
        if args.batches < 1:
            raise ValueError(f"--batches must be ≥ 1, got {args.batches}")
        for name in args.datasets:
            check_dataset_name(name)
        check_model_name(model_cfg.name)
        tasks = [load_task(dataclasses.replace(data, dataset=name)) for name in args.datasets]
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    rows = []
    for task in tasks:
        rows += measure(model, tok, task, gen, dp, epsilons, args.draws, args.batches, seed=args.seed, progress=True)
    out = Path(args.out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    write_text(out / "dp_fidelity.csv", buf.getvalue())
    settings = (f"{model_cfg.name}; pool {data.pool_per_class} per class; δ = {dp.delta:g}, C = {dp.clip_norm:g}, "
                f"{dp.mechanism} σ, {dp.relation} neighbours; B = {gen.batch_size}, L = {gen.max_seq_len}; "
                f"{args.draws} noise draws × {args.batches} batches per kind; seed {args.seed}. "
                f"Made by `python scripts/dp_fidelity.py{' ' + ' '.join(argv) if argv else ''}`.")
    write_text(out / "dp_fidelity.md", markdown(rows).replace("\n\n|", f"\n\n{settings}\n\n|", 1))
    print(f"wrote {out / 'dp_fidelity.csv'} and .md in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
