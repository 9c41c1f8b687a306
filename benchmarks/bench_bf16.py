"""fp32 against bf16 (`model.dtype: bfloat16`) on the CPU's bf16 units: speed and what the numerics change.

    python benchmarks/bench_bf16.py [--batch 10] [--seq-len 28] [--repeats 3] [--out FILE] [--numerics-only]

In one process, SmolLM2 loaded once per dtype, on the same starting batch X (fp32, random vocabulary rows):
  inner step  = one X-step gradient ∂f/∂X (the frozen model in bf16, X kept in fp32);
  Z-step      = the KV-cached projection of the same X;
  outer iter  = one Z-step + `inner` X-steps + dual update through `run_batch` (a 4- minus a 1-iteration run,
                over 3);
  fine-tune   = one AdamW step on 8 pool texts (bf16: fp32 master weights, bf16 autocast), from the difference
                of a 6- and a 1-step `train_copy`;
and the numerics: cosine of the bf16 and fp32 gradients at the same X, the share of free positions where the
Z-step picks the same token from the same X, the same share when bf16 decodes after fp32's tokens (teacher-forced:
each position's choice after the same context, so one flipped near-tie does not change the rest of its row), the
fine-tuning losses after 6 steps. --numerics-only skips the timings (on a busy machine, say). The paper-schedule estimate
is 30 × (Z-step + 50 inner steps) for a batch of `batch` texts. Writes a markdown table (stdout, --out appends).
"""

import sys

import torch
import torch.nn.functional as F
from harness import (  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)
    batch_parser,
    emit,
    positive_class_problem,
    timed,
)

from gradmm.config import DataConfig, FinetuneConfig
from gradmm.core.admm import run_batch
from gradmm.core.data import load_task
from gradmm.core.models import bf16_units, input_embeddings, load_model
from gradmm.core.projection import project_to_tokens
from gradmm.methods.finetune import train_copy


def teacher_forced_choices(problem, X: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The Z-step's tokens for X when the context after each free position is `teacher`'s token there."""
    (_, prefix), = problem.groups(X.shape[0])
    return project_to_tokens(problem.model, X, prefix, problem.allowed, problem.cfg.topk, problem.cfg.order,
                             fixed_suffix_ids=problem.layout.suffix_ids, fixed_prefix_ids=problem.layout.prefix_ids,
                             progress=False, emb=problem.emb, teacher_ids=teacher)[0]


def measure(dtype: str, args, task, X0: torch.Tensor | None, teacher: torch.Tensor | None = None) -> dict:
    model, tok = load_model(args.model, device="cpu", dtype=dtype)
    problem = positive_class_problem(model, tok, task, args)
    if X0 is None:  # the fp32 run draws the batch; the bf16 run starts from the very same fp32 tensor
        torch.manual_seed(0)
        emb = input_embeddings(model).float()
        X0 = problem.freeze(emb[torch.randint(emb.shape[0], (args.batch, args.seq_len))].clone())
    X = X0.clone().requires_grad_(True)
    r = args.repeats
    out = {"X0": X0, "free": problem.layout.free, "grad": torch.autograd.grad(problem.f(X), X)[0].float(),
           "ids": problem.project(X.detach(), progress=False)[0]}
    if teacher is not None:
        out["forced_ids"] = teacher_forced_choices(problem, X.detach(), teacher)
    if args.numerics_only:
        return out
    out["inner"] = timed(lambda: torch.autograd.grad(problem.f(X), X), r)
    out["z"] = timed(lambda: problem.project(X.detach(), progress=False), r)

    def run_with(outer_steps):
        problem.cfg.outer_steps = outer_steps
        return timed(lambda: run_batch(problem, args.batch, seed=0, progress=False), 2)

    out["outer"] = (run_with(4) - run_with(1)) / 3
    train = task.pool[:8]

    def finetune(steps):
        cfg = FinetuneConfig(steps=steps, batch_size=8)
        return train_copy(model, tok, train, task.template, cfg, 5e-5, seed=0, progress=False)[1]

    out["losses"] = finetune(6)
    out["ft_step"] = (timed(lambda: finetune(6), 1) - timed(lambda: finetune(1), 1)) / 5
    return out


def main(argv=None) -> str:
    ap = batch_parser(__doc__)
    ap.add_argument("--numerics-only", action="store_true", help="only the numerics line, no timings")
    args = ap.parse_args(argv)
    units = bf16_units(torch.device("cpu"))
    if units is None:
        raise SystemExit("this CPU has no bf16 units (amx_bf16 / avx512_bf16): nothing to compare")
    task = load_task(DataConfig(dataset=args.dataset))
    fp32 = measure("float32", args, task, None)
    free = fp32["free"]  # the template's suffix positions are fixed, equal by construction
    bf16 = measure("bfloat16", args, task, fp32["X0"], teacher=fp32["ids"][:, free])

    cos = F.cosine_similarity(fp32["grad"].flatten(), bf16["grad"].flatten(), dim=0).item()
    same = (fp32["ids"][:, free] == bf16["ids"][:, free]).float().mean().item()
    forced = (fp32["ids"][:, free] == bf16["forced_ids"][:, free]).float().mean().item()
    numerics = (f"Numerics at the same X: gradient cosine bf16 vs fp32 {cos:.4f}; the Z-step picks the same token at "
                f"{100 * same:.1f} % of the free positions, and at {100 * forced:.1f} % when bf16 decodes after fp32's "
                "tokens (teacher-forced)")
    if args.numerics_only:
        return emit([f"{args.model}, B={args.batch}, L={args.seq_len}, k={args.topk}, bf16 units: {units}", "",
                     numerics + "."], args.out)
    paper = {k: 30 * (d["z"] + 50 * d["inner"]) for k, d in (("fp32", fp32), ("bf16", bf16))}
    rows = [("X-step inner step", "inner"), (f"Z-step (KV cache, k={args.topk})", "z"),
            (f"outer iteration (1 Z + {args.inner} X steps)", "outer"), ("fine-tuning step (8 texts)", "ft_step")]
    lines = [(f"{args.model}, B={args.batch}, L={args.seq_len}, torch threads {torch.get_num_threads()}, "
              f"bf16 units: {units}; median of {args.repeats}"), "",
             "| step | fp32 s | bf16 s | speed-up |", "|---|---|---|---|"]
    for name, key in rows:
        lines.append(f"| {name} | {fp32[key]:.3f} | {bf16[key]:.3f} | {fp32[key] / bf16[key]:.2f}× |")
    lines.append(f"| per text, one outer iteration | {fp32['outer'] / args.batch:.3f} | "
                 f"{bf16['outer'] / args.batch:.3f} | {fp32['outer'] / bf16['outer']:.2f}× |")
    lines.append(f"| paper schedule (30 × 50), batch of {args.batch}, estimated | {paper['fp32'] / 60:.1f} min | "
                 f"{paper['bf16'] / 60:.1f} min | {paper['fp32'] / paper['bf16']:.2f}× |")
    lines += ["", (f"{numerics}; fine-tuning loss after 6 steps fp32 {fp32['losses'][-1]:.4f}, bf16 "
                   f"{bf16['losses'][-1]:.4f} (first step {fp32['losses'][0]:.4f} / {bf16['losses'][0]:.4f}).")]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main() and 0)
