"""Per-text gradient sketches (the set choice of `gradmm_select_full`), against their floor and the plain way.

    python benchmarks/bench_sketch.py [--texts 8] [--repeats 3] [--out FILE]

In one process, SmolLM2 fp32, the first `texts` rtpolarity pool texts, seconds per text (median of `repeats`):
  floor        = one forward + backward of fine-tuning's loss on the text into the weights' .grad, nothing else;
  the package  = `example_sketches` (the gradient sketched straight from .grad into reused buffers);
  plain        = `fine_tuning_gradient` per text (a copy of every weight's gradient) sketched with fresh
                 zero-padded tensors per call: the obvious way, and the package's before the buffers were reused.
Checks that the package's and the plain way's sketches are equal, then writes a markdown table (stdout, --out
appends).
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from harness import emit, timed  # benchmarks/harness.py (run as a script, benchmarks/ is on sys.path)

from gradmm.config import DataConfig
from gradmm.core.data import load_task
from gradmm.core.models import load_model
from gradmm.core.scoring import first_label_ids
from gradmm.methods.finetune import classification_loss
from gradmm.methods.full_gradient import GradientSketch, example_sketches, fine_tuning_gradient, weight_gradients


def plain_sketch(sketch: GradientSketch, grads: list[torch.Tensor]) -> torch.Tensor:
    out = torch.zeros(sketch.k)
    for g, s in zip(grads, sketch.signs):
        signed = g.reshape(-1).float() * s
        out += F.pad(signed, (0, (-signed.numel()) % sketch.k)).view(-1, sketch.k).sum(0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    model, tok = load_model("smollm2-135m", device="cpu")
    task = load_task(DataConfig(dataset="rtpolarity"))
    texts, template = task.pool[:args.texts], task.template
    sketch = GradientSketch(model)
    label_ids = first_label_ids(tok, template)

    def floor():
        with weight_gradients(model):
            for ex in texts:
                model.zero_grad(set_to_none=False)
                classification_loss(model, tok, [ex], template, label_ids).backward()

    def package():
        return example_sketches(model, tok, texts, template, sketch, progress=False)

    def plain():
        return torch.stack([plain_sketch(sketch, fine_tuning_gradient(model, tok, [ex], template)) for ex in texts])

    same = torch.allclose(package(), plain(), rtol=1e-5, atol=1e-6)
    t_floor, t_package, t_plain = (timed(fn, args.repeats) / len(texts) for fn in (floor, package, plain))
    lines = [f"smollm2-135m fp32, {len(texts)} rtpolarity pool texts, sketch k = {sketch.k}, "
             f"{torch.get_num_threads()} threads; sketches equal: {same}", "",
             "| per text | seconds | × floor |", "|---|---|---|"]
    for name, t in (("floor: forward + backward into .grad", t_floor), ("the package: `example_sketches`", t_package),
                    ("plain: gradient copy + fresh padded tensors", t_plain)):
        lines.append(f"| {name} | {t:.3f} | {t / t_floor:.2f} |")
    lines += ["", f"The package is {t_plain / t_package:.2f}× the plain way's speed."]
    emit(lines, args.out)
    if not same:
        sys.exit("bench_sketch: the package's sketches differ from the plain way's")


if __name__ == "__main__":
    main()
