"""A paper-schedule GRADMM generation end to end (30 outer × 50 inner steps, Adam lr 0.008, 500 initial candidates,
top-200 Z-steps, B = 10), timed on the path given: dtype, batches stepped together, early stop.

    python benchmarks/bench_paper_batch.py [--dtype bfloat16] [--parallel 2] [--patience 5] [--outer 30]
                                           [--inner 50] [--init-candidates 500] [--out FILE]

`parallel` batches of 10 texts of rtpolarity's positive class run as one `run_batches` call; the table gives
the wall time per 10 texts, the outer steps each batch ran before its early stop, and each batch's f(Z).
"""

import time

import torch
from harness import batch_parser, emit, positive_class_problem  # benchmarks/harness.py (benchmarks/ is on sys.path)

from gradmm.config import DataConfig
from gradmm.core.admm import run_batches
from gradmm.core.data import load_task
from gradmm.core.models import load_model


def main(argv=None) -> str:
    ap = batch_parser(__doc__, inner=50)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--outer", type=int, default=30)
    ap.add_argument("--init-candidates", type=int, default=500)
    args = ap.parse_args(argv)
    task = load_task(DataConfig(dataset=args.dataset))
    model, tok = load_model(args.model, device="cpu", dtype=args.dtype)
    problem = positive_class_problem(model, tok, task, args)
    cfg = problem.cfg
    cfg.outer_steps, cfg.lr, cfg.init_candidates = args.outer, 0.008, args.init_candidates
    cfg.stop_patience, cfg.parallel_batches = args.patience, args.parallel
    start = time.perf_counter()
    out = run_batches(problem, args.batch, list(range(args.parallel)), progress=True)
    wall = time.perf_counter() - start
    texts = args.parallel * args.batch
    lines = [f"SmolLM2 ({args.model}), {args.dtype}, {args.outer} × {args.inner} steps, lr 0.008, "
             f"{args.init_candidates} initial candidates, k = {args.topk}, B = {args.batch}, L = {args.seq_len}, "
             f"{args.parallel} batch(es) stepped together, stop_patience {args.patience}, "
             f"torch threads {torch.get_num_threads()}", "",
             "| texts | wall min | min per 10 texts | outer steps run per batch | f(Z) per batch |", "|---|---|---|---|---|",
             f"| {texts} | {wall / 60:.1f} | {wall / 60 * 10 / texts:.1f} | {[r['outer_steps_run'] for r in out]} | "
             f"{[round(r['f_Z'], 4) for r in out]} |"]
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
