"""Benchmark of the generator's steps on SmolLM2 against their floors and against the naive (authors') path.

    python benchmarks/bench_generator.py [--batch 10] [--seq-len 28] [--topk 200] [--repeats 3] [--out FILE]

Measures, in one process and on one batch (median of `repeats`):
  inner step  = one X-step (closed-form Gram cosine, last position only) vs (a) one forward+backward of the
                model on the batch to the input embeddings (its floor) and vs (c) the naive inner step
                (autograd over the head weight with create_graph, a dense V×d cosine: the authors' way);
  Z-step      = the KV-cached projection vs (b) one forward pass over the batch, vs L incremental
                single-token forwards (its real floor) and vs (c) the projection without KV cache;
  outer iter  = one Z-step + `inner` X-steps + dual update, through `run_batch`;
and the peak resident memory of the process. Writes a markdown table (stdout, and --out if given).
"""

import resource
import sys

import torch
import torch.nn.functional as F
from harness import (  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)
    batch_parser,
    emit,
    positive_class_problem,
    timed,
)

from gradmm.config import DataConfig
from gradmm.core.admm import run_batch
from gradmm.core.data import load_task
from gradmm.core.matching import head_logits
from gradmm.core.models import input_embeddings, last_hidden, load_model, output_head
from gradmm.core.projection import project_to_tokens_naive


def main(argv=None) -> str:
    ap = batch_parser(__doc__)
    args = ap.parse_args(argv)

    model, tok = load_model(args.model, device="cpu")
    task = load_task(DataConfig(dataset=args.dataset))
    problem = positive_class_problem(model, tok, task, args)
    target, suffix, prefix = problem.target, problem.layout.suffix_ids, problem.decoding_prefix
    torch.manual_seed(0)
    emb = input_embeddings(model)
    X = problem.freeze(emb[torch.randint(emb.shape[0], (args.batch, args.seq_len))].clone()).requires_grad_(True)

    def inner_step():
        grad = torch.autograd.grad(problem.f(X), X)[0]
        return grad

    def fwd_bwd():  # floor (a): the whole model forward and backward to the inputs, last position only
        h = last_hidden(model, inputs_embeds=X)
        return torch.autograd.grad(head_logits(model, h)[:, target.label_id].sum(), X)[0]

    G_W = target.dense()[0].float()  # the authors' dense V×d target

    def naive_inner_step():  # (c): autograd over the head weight with create_graph, dense cosine
        W, b = output_head(model)
        Wg = W.detach().clone().requires_grad_(True)
        h = last_hidden(model, inputs_embeds=X)
        loss = F.cross_entropy(F.linear(h, Wg, b), torch.full((args.batch,), target.label_id))
        g = torch.autograd.grad(loss, Wg, create_graph=True)[0]
        f = 1 - F.cosine_similarity(g.flatten(), G_W.flatten(), dim=0)
        return torch.autograd.grad(f, X)[0]

    def forward_only():  # floor (b) of the paper's view: one forward pass over the batch
        with torch.no_grad():
            model(inputs_embeds=X.detach(), use_cache=False)

    free = args.seq_len - len(suffix)
    ctx = torch.tensor(prefix)[None].expand(args.batch, -1)

    def incremental_floor():  # the cached Z-step's real floor: prefix forward + L single-token forwards
        with torch.no_grad():
            out = model(input_ids=ctx, use_cache=True)
            cache, tok_ids = out.past_key_values, ctx[:, -1:]
            for _ in range(free - 1):
                cache = model(input_ids=tok_ids, past_key_values=cache, use_cache=True).past_key_values

    def z_step():
        problem.project(X.detach(), progress=False)

    def z_step_naive():
        project_to_tokens_naive(model, X.detach(), prefix, problem.allowed, args.topk, fixed_suffix_ids=suffix,
                                progress=False)

    def run_with(outer_steps):  # run_batch end to end; the difference of two lengths is one outer iteration
        problem.cfg.outer_steps = outer_steps
        return timed(lambda: run_batch(problem, args.batch, seed=0, progress=False), 1)

    r = args.repeats
    t = {"inner": timed(inner_step, r), "fwd_bwd": timed(fwd_bwd, r), "naive_inner": timed(naive_inner_step, r),
         "forward": timed(forward_only, r), "z": timed(z_step, r), "incremental": timed(incremental_floor, r),
         "z_naive": timed(z_step_naive, 1)}
    t["outer"] = run_with(3) - run_with(2)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows = [
        ("X-step inner step (closed form)", t["inner"], "fwd+bwd to X (a)", t["fwd_bwd"], "naive: autograd over W (c)", t["naive_inner"]),
        ("Z-step, KV cache, k=%d" % args.topk, t["z"], "one forward pass (b)", t["forward"], "naive: no KV cache (c)", t["z_naive"]),
        ("Z-step, KV cache", t["z"], "prefix + L incremental forwards", t["incremental"], "", float("nan")),
        ("outer iteration (1 Z + %d X steps)" % args.inner, t["outer"], "", float("nan"), "", float("nan")),
    ]
    lines = [f"SmolLM2 ({args.model}), B={args.batch}, L={args.seq_len}, k={args.topk}, torch threads "
             f"{torch.get_num_threads()}, median of {r}; peak RSS {peak_gib:.2f} GiB", "",
             "| step | seconds | floor | floor s | ratio | naive | naive s | speed-up |", "|---|---|---|---|---|---|---|---|"]
    for name, s, floor, fs, naive, ns in rows:
        ratio = f"{s / fs:.2f}×" if fs == fs else ""
        speed = f"{ns / s:.1f}×" if ns == ns else ""
        lines.append(f"| {name} | {s:.3f} | {floor} | {'' if fs != fs else f'{fs:.3f}'} | {ratio} | {naive} | "
                     f"{'' if ns != ns else f'{ns:.3f}'} | {speed} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main() and 0)
