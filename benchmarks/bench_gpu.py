"""Paper-scale cost of the generator and of fine-tuning on one GPU, and how several processes share it.

    python benchmarks/bench_gpu.py --arch phi-1_5 smollm2 [--procs 1 4 8 16] [--out FILE]

For each architecture, built from its config with random weights (compute and memory do not depend on the
weights' values; Phi-1.5's own weights need the hub), on the paper's batch (B = 10, k = 200, 50 inner
steps per outer step, 500 initial candidates) and the rtpolarity task:
  X-step      one inner step (closed-form head gradient, last position);
  Z-step      one KV-cached top-k projection;
  init        run_batch with one outer step minus one outer step: the 500-candidate initialisation;
  outer       run_batch(2 outer) − run_batch(1 outer): one Z-step + 50 X-steps + the dual update;
  batch 30×50 init + 30 outer (arithmetic on the measured parts, not a run);
  FT step     one full fine-tuning step (AdamW, batch 16 prompts of the task), and 200 steps (the paper's run);
  peak GPU memory of the process.
--procs: N processes each run X-steps of the first architecture for --seconds; the table gives the steps per
second of all N together (one GPU is shared by time-slicing, or by MPS when its daemon runs).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from gradmm.config import DataConfig, GenerateConfig
from gradmm.core.admm import Layout, Problem, run_batch
from gradmm.core.data import load_task
from gradmm.core.matching import class_targets
from gradmm.core.models import input_embeddings, load_tokenizer
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import first_label_ids
from gradmm.methods.finetune import classification_loss

ARCHS = {  # the published configs' shapes
    "smollm2": ("LlamaForCausalLM", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                                         rope_theta=100000.0, max_position_embeddings=8192)),
    "phi-1_5": ("PhiForCausalLM", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                                       num_attention_heads=32, partial_rotary_factor=0.5, tie_word_embeddings=False,
                                       max_position_embeddings=2048)),
}


def random_model(arch: str, vocab_size: int, device):
    import transformers

    cls_name, kw = ARCHS[arch]
    cls = getattr(transformers, cls_name)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: 1.4B random weights on a CPU take a while
        model = cls(cls.config_class(vocab_size=vocab_size, **kw)).eval()
    return model.requires_grad_(False)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def setup(arch, device, args):
    tok = load_tokenizer("tiny-random")  # SmolLM2's tokenizer (Phi's needs the hub); the vocab only sizes the head
    task = load_task(DataConfig(dataset="rtpolarity", data_dir=args.data_dir))
    model = random_model(arch, 51200 if arch == "phi-1_5" else len(tok), device)
    cfg = GenerateConfig(batch_size=args.batch, inner_steps=args.inner, outer_steps=1, topk=args.topk,
                         init_candidates=args.init_candidates, lr=0.008, rho=0.1)
    target = class_targets(model, tok, task.pool, task.template)[1]
    suffix = tok(task.template.suffix, add_special_tokens=False).input_ids
    from gradmm.methods.generate import decoding_prefix_ids

    prefix = decoding_prefix_ids(tok, task, 1, cfg)
    allowed = allowed_token_mask(tok, input_embeddings(model).shape[0])
    problem = Problem(model, target, Layout([], suffix, args.seq_len), prefix, allowed, cfg)
    return model, tok, task, problem


def worker(args) -> None:  # one of --procs processes: X-steps for --seconds, prints how many
    device = torch.device(args.device)
    model, tok, task, problem = setup(args.arch[0], device, args)
    emb = input_embeddings(model)
    X = problem.freeze(emb[torch.randint(emb.shape[0], (args.batch, args.seq_len), device=device)].clone()).requires_grad_(True)
    for _ in range(3):
        torch.autograd.grad(problem.f(X), X)
    print("READY", flush=True)
    sys.stdin.readline()  # all workers start together
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        torch.autograd.grad(problem.f(X), X)
        n += 1
    sync(device)
    print(json.dumps({"steps": n, "seconds": time.perf_counter() - start}), flush=True)


def scaling(args, n_procs: int) -> float:
    cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--arch", args.arch[0], "--seconds",
           str(args.seconds), "--data-dir", args.data_dir or "", "--seq-len", str(args.seq_len)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n_procs)]
    for p in procs:
        while p.stdout.readline().strip() != "READY":
            pass
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(r["steps"] / r["seconds"] for r in results)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["phi-1_5", "smollm2"], choices=sorted(ARCHS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=28)  # mean rtpolarity prompt length (SmolLM2 tokens)
    ap.add_argument("--topk", type=int, default=200)
    ap.add_argument("--inner", type=int, default=50)
    ap.add_argument("--init-candidates", type=int, default=500)
    ap.add_argument("--ft-batch", type=int, default=16)
    ap.add_argument("--procs", type=int, nargs="*", default=[])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--scaling-json", help="also write {processes: steps/s} here")
    ap.add_argument("--scaling-only", action="store_true", help="skip the per-architecture table")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or None
    if args.worker:
        return worker(args)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    lines = [f"{name}, torch {torch.__version__}, fp32, B={args.batch}, L={args.seq_len}, k={args.topk}, "
             f"{args.inner} inner steps, {args.init_candidates} initial candidates; random weights", "",
             "| architecture | params | X-step s | Z-step s | init s | outer s | "
             f"batch 30×{args.inner} s (sum) | FT step s | 200 FT steps s (sum) | peak GPU GiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arch in [] if args.scaling_only else args.arch:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model, tok, task, problem = setup(arch, device, args)
        emb = input_embeddings(model)
        torch.manual_seed(0)
        X = problem.freeze(emb[torch.randint(emb.shape[0], (args.batch, args.seq_len), device=device)].clone()).requires_grad_(True)
        t_x = timed(lambda: torch.autograd.grad(problem.f(X), X), device)
        t_z = timed(lambda: problem.project(X.detach(), progress=False), device)

        def run_with(outer):
            problem.cfg.outer_steps = outer
            return timed(lambda: run_batch(problem, args.batch, seed=0, progress=False), device, repeats=1)

        one, two = run_with(1), run_with(2)
        outer, init = two - one, max(2 * one - two, 0.0)
        model.requires_grad_(True)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        label_ids = first_label_ids(tok, task.template)
        batch = task.pool[:args.ft_batch]

        def ft_step():
            loss = classification_loss(model, tok, batch, task.template, label_ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        t_ft = timed(ft_step, device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        lines.append(f"| {arch} | {n_params:.0f}M | {t_x:.4f} | {t_z:.3f} | {init:.2f} | {outer:.2f} | "
                     f"{init + 30 * outer:.0f} | {t_ft:.4f} | {200 * t_ft:.0f} | {peak:.1f} |")
        print("\n".join(lines), flush=True)  # so far: a run stopped by a time limit keeps its finished rows
        del model, opt, problem, X
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.procs:
        lines += ["", f"X-steps per second of N concurrent processes ({args.arch[0]}, {args.seconds:g} s each):", "",
                  "| processes | steps/s, all together | × one process |", "|---|---|---|"]
        rates = {}
        for n in args.procs:
            rates[n] = scaling(args, n)
            lines.append(f"| {n} | {rates[n]:.1f} | {rates[n] / rates[args.procs[0]]:.2f}× |")
            print(lines[-1], flush=True)
        if args.scaling_json:
            with open(args.scaling_json, "w") as f:
                json.dump(rates, f)
    table = "\n".join(lines)
    print(table, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n\n")
    return table


if __name__ == "__main__":
    sys.exit(main() and 0)
