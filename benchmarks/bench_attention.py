"""Why a bf16 model on the CPU uses eager attention: forward + backward to the input embeddings (the X-step's
floor) with PyTorch's sdpa attention and with eager attention, fp32 and bf16, and the profiler's time in the
attention kernels.

    python benchmarks/bench_attention.py [--batch 10] [--seq-len 28] [--repeats 3]
"""

import argparse
import sys

import torch
from harness import emit, timed  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)

from gradmm.core.models import input_embeddings, last_hidden, load_model


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    lines = [(f"{args.model}, B={args.batch}, L={args.seq_len}, torch threads {torch.get_num_threads()}, "
              f"median of {args.repeats}"), "", "| dtype | attention | fwd+bwd s | forward s | attention kernels ms |",
             "|---|---|---|---|---|"]
    torch.manual_seed(0)
    X0 = None
    for dtype, attn in (("float32", "sdpa"), ("float32", "eager"), ("bfloat16", "sdpa"), ("bfloat16", "eager")):
        model, _ = load_model(args.model, device="cpu", dtype=dtype)
        model.set_attn_implementation(attn)
        if X0 is None:
            emb = input_embeddings(model).float()
            X0 = emb[torch.randint(emb.shape[0], (args.batch, args.seq_len))].clone()
        X = X0.clone().requires_grad_(True)

        def fwd_bwd(model=model, X=X):
            return torch.autograd.grad(last_hidden(model, inputs_embeds=X).float().sum(), X)[0]

        def fwd(model=model, X=X):
            with torch.no_grad():
                last_hidden(model, inputs_embeds=X)

        t_fb, t_f = timed(fwd_bwd, args.repeats), timed(fwd, args.repeats)
        with torch.profiler.profile() as prof:
            fwd_bwd()
        attn_us = sum(e.self_cpu_time_total for e in prof.key_averages()
                      if "attention" in e.key or "softmax" in e.key or e.key == "aten::bmm")
        lines.append(f"| {dtype} | {attn} | {t_fb:.3f} | {t_f:.3f} | {attn_us / 1000:.0f} |")
    return emit(lines)


if __name__ == "__main__":
    sys.exit(main() and 0)
