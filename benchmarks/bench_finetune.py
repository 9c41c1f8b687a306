"""One fine-tuning step, fp32 against the bf16 path (`model.dtype: bfloat16`), and where the time goes.

    python benchmarks/bench_finetune.py [--texts 8] [--steps 6] [--repeats 3] [--out FILE]

In one process, SmolLM2 loaded once per dtype, the same `texts` pool texts as one batch:
  train_copy   = the package's fine-tuning (`gradmm.methods.finetune.train_copy`): seconds per step from the
                 difference of a `steps`- and a 1-step run (the model copy and set-up cancel);
  the ways     = one step written out four ways, split into forward + backward and clip + optimiser step:
                 fp32 with the for-loop AdamW (the committed path), fp32 with fused AdamW, bf16 autocast over
                 the fp32 masters (the bf16 path before), and the bf16 copy of the masters (Bf16Compute) with
                 fused AdamW (the bf16 path now);
and the losses after `steps` steps of each `train_copy`. Writes a markdown table (stdout, --out appends).
"""

import argparse
import copy
import sys
import time

import torch
from harness import emit, timed  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)

from gradmm.config import DataConfig, FinetuneConfig
from gradmm.core.data import load_task
from gradmm.core.models import bf16_units, load_model
from gradmm.core.scoring import first_label_ids
from gradmm.methods.finetune import Bf16Compute, classification_loss, train_copy

WAYS = [("fp32, for-loop AdamW (committed)", "float32", "fp32", False),
        ("fp32, fused AdamW", "float32", "fp32", True),
        ("bf16 autocast over fp32 masters, for-loop AdamW (before)", "bfloat16", "autocast", False),
        ("bf16 copy of fp32 masters, fused AdamW (now)", "bfloat16", "copy", True)]


def one_way(base, tok, task, train, mode: str, fused: bool, repeats: int) -> tuple[float, float]:
    """Median (forward + backward s, clip + optimiser s) of one step, after a warm-up step."""
    ids = first_label_ids(tok, task.template)
    master = copy.deepcopy(base).float().requires_grad_(True)
    params = [p for p in master.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=fused)
    compute = Bf16Compute(base, master) if mode == "copy" else None
    fwd, upd = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if compute is not None:
            compute.pull()
            classification_loss(compute.model, tok, train, task.template, ids).backward()
            compute.push_grads()
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
                loss = classification_loss(master, tok, train, task.template, ids)
            loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        upd.append(t2 - t1)
    median = lambda xs: sorted(xs[1:])[len(xs[1:]) // 2]  # noqa: E731
    return median(fwd), median(upd)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="rtpolarity")
    ap.add_argument("--texts", type=int, default=8)  # the fine-tuning batch size of the quick and study profiles
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    units = bf16_units(torch.device("cpu"))
    if units is None:
        raise SystemExit("this CPU has no bf16 units (amx_bf16 / avx512_bf16): nothing to compare")
    task = load_task(DataConfig(dataset=args.dataset))
    train = task.pool[:args.texts]
    cfg = lambda steps: FinetuneConfig(steps=steps, batch_size=args.texts)  # noqa: E731
    step, losses, ways = {}, {}, {}
    for dtype in ("float32", "bfloat16"):
        base, tok = load_model(args.model, device="cpu", dtype=dtype)
        run = lambda steps: train_copy(base, tok, train, task.template, cfg(steps), 5e-5, seed=0, progress=False)[1]  # noqa: E731,B023
        losses[dtype] = run(args.steps)
        step[dtype] = (timed(lambda: run(args.steps), 1) - timed(lambda: run(1), 1)) / (args.steps - 1)  # noqa: B023
        for name, way_dtype, mode, fused in WAYS:
            if way_dtype == dtype:
                ways[name] = one_way(base, tok, task, train, mode, fused, args.repeats)
        del base
    first = ways[WAYS[0][0]]
    lines = [(f"{args.model}, {args.texts} {args.dataset} texts per step, torch threads {torch.get_num_threads()}, "
              f"bf16 units: {units}; ways: median of {args.repeats} steps after a warm-up"), "",
             "| fine-tuning step | seconds | speed-up over fp32 |", "|---|---|---|",
             f"| `train_copy`, fp32 | {step['float32']:.3f} | 1.00× |",
             f"| `train_copy`, bf16 | {step['bfloat16']:.3f} | {step['float32'] / step['bfloat16']:.2f}× |", "",
             "| way | forward + backward s | clip + AdamW s | step s | speed-up over the first |",
             "|---|---|---|---|---|"]
    for name, (f, u) in ways.items():
        lines.append(f"| {name} | {f:.3f} | {u:.3f} | {f + u:.3f} | {sum(first) / (f + u):.2f}× |")
    lines += ["", (f"Losses after {args.steps} steps of `train_copy`: fp32 {losses['float32'][-1]:.4f}, bf16 "
                   f"{losses['bfloat16'][-1]:.4f} (first step {losses['float32'][0]:.4f} / {losses['bfloat16'][0]:.4f}).")]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main() and 0)
