"""What the CPU benchmarks share: a median timer, writing their markdown table, and the benchmark's GRADMM batch."""

import argparse
import statistics
import time

from gradmm.config import GenerateConfig
from gradmm.core.admm import Layout, Problem
from gradmm.core.matching import class_targets
from gradmm.core.projection import allowed_token_mask
from gradmm.methods.generate import decoding_prefix_ids


def batch_parser(doc: str, inner: int = 10) -> argparse.ArgumentParser:
    """The options every generator benchmark shares: model, data, the batch's shape, repeats, where to write."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="rtpolarity")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=28)  # mean rtpolarity prompt length with SmolLM2: 27.6
    ap.add_argument("--topk", type=int, default=200)
    ap.add_argument("--inner", type=int, default=inner)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    return ap


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(lines: list[str], out: str | None = None) -> str:
    """Print the table; append it to `out` (e.g. benchmarks/README.md) when given."""
    table = "\n".join(lines)
    print(table, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(table + "\n\n")
    return table


def positive_class_problem(model, tok, task, args) -> Problem:
    """The batch the benchmarks time: the positive class's target, the template suffix, args.seq_len tokens,
    top-args.topk Z-steps, args.inner X-steps per outer iteration, one initial candidate."""
    target = class_targets(model, tok, task.pool, task.template)[1]
    suffix = tok(task.template.suffix, add_special_tokens=False).input_ids
    cfg = GenerateConfig(topk=args.topk, inner_steps=args.inner, outer_steps=1, init_candidates=1,
                         batch_size=args.batch)
    prefix = decoding_prefix_ids(tok, task, 1, cfg)
    return Problem(model, target, Layout([], suffix, args.seq_len), prefix, allowed_token_mask(tok), cfg)
