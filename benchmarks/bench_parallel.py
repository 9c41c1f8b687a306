"""Batches stepped together (`generate.parallel_batches`): cost per text of K batches of B in one forward/backward.

    python benchmarks/bench_parallel.py [--batch 10] [--seq-len 28] [--parallel 1 2 4] [--dtypes float32 bfloat16]
                                        [--repeats 3] [--out FILE]

In one process per dtype, SmolLM2 loaded once, K batches of B rows started from K seeds (one LM-free random start
each, as `run_batches` starts them):
  inner step  = one X-step gradient of the K batches' matching losses (one forward/backward over K·B rows);
  Z-step      = the KV-cached projection of the K batches (one decoding pass over K·B rows);
  outer iter  = `outer_iteration` of the K batches: one Z-step + `inner` X-steps + dual updates (median of 2);
each divided by the K·B texts, and as a speed-up over K = 1 of the same dtype. The paper-schedule estimate is
30 × (Z-step + 50 inner steps) per 10 texts. Writes a markdown table (stdout, --out appends).
"""

import sys

import torch
from harness import batch_parser, emit, positive_class_problem, timed  # benchmarks/harness.py (on sys.path)

from gradmm.config import DataConfig
from gradmm.core.admm import outer_iteration, start_batch
from gradmm.core.data import load_task
from gradmm.core.models import bf16_units, load_model


def measure(problem, K: int, args) -> dict:
    """Seconds per text of the three steps for K batches stepped together."""
    states = [start_batch(problem, args.batch, seed, None) for seed in range(K)]
    n_texts, r = K * args.batch, args.repeats
    X = torch.cat([b.X.detach() for b in states])
    Xs = [b.X for b in states]
    inner = timed(lambda: torch.autograd.grad(problem.f_each(K, X=torch.cat(Xs)).sum(), Xs), r)
    z = timed(lambda: problem.project(X, progress=False), r)
    t = iter(range(100))
    outer = timed(lambda: outer_iteration(problem, states, next(t), progress=False), 2)
    return {"inner": inner / n_texts, "z": z / n_texts, "outer": outer / n_texts}


def main(argv=None) -> str:
    ap = batch_parser(__doc__)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    if "bfloat16" in args.dtypes and bf16_units(torch.device("cpu")) is None:
        print("this CPU has no bf16 units (amx_bf16 / avx512_bf16): fp32 only", file=sys.stderr)
        args.dtypes = [d for d in args.dtypes if d != "bfloat16"]
    task = load_task(DataConfig(dataset=args.dataset))
    lines = [f"SmolLM2 ({args.model}), B={args.batch}, L={args.seq_len}, k={args.topk}, {args.inner} inner steps per "
             f"outer iteration, torch threads {torch.get_num_threads()}, median of {args.repeats}; "
             "ms per text (speed-up over K = 1 of the same dtype; over fp32 K = 1)", "",
             "| dtype | K batches | inner step | Z-step | outer iteration | paper-schedule batch of 10, estimated |",
             "|---|---|---|---|---|---|"]
    base = None
    for dtype in args.dtypes:
        model, tok = load_model(args.model, device="cpu", dtype=dtype)
        problem = positive_class_problem(model, tok, task, args)
        one = None
        for K in args.parallel:
            m = measure(problem, K, args)
            one, base = one or m, base or m

            def cell(key, m=m, one=one):
                return f"{1000 * m[key]:.0f} ({one[key] / m[key]:.2f}×; {base[key] / m[key]:.2f}×)"

            paper = 30 * (m["z"] + 50 * m["inner"]) * 10 / 60
            lines.append(f"| {dtype} | {K} | {cell('inner')} | {cell('z')} | {cell('outer')} | {paper:.1f} min |")
        del model, problem
    return emit(lines, args.out)


if __name__ == "__main__":
    main()
