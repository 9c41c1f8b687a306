"""Which gradient tells a good training set from a bad one? For every committed training set of the quality
studies, the cosine distance between the set's gradient and held-out real text's, and that distance's rank
correlation (Spearman, over the sets of one dataset) with the accuracy the set fine-tuned to.

Distances, each per class (mean over classes of the class gradients' distance) and for the whole set (all
classes in one mean, as a fine-tuning batch takes it):
- `head_paper`: the paper's matched quantity, the output head's gradient of the label word's cross-entropy over
  the vocabulary, in closed form (gradmm.core.matching; the f every study reports, here against the dev split);
- `<loss>_<group>`: autograd gradients over more of the model, the last transformer block, all blocks, or every
  weight, under the paper's loss (`paper`) or fine-tuning's own (`finetune`: softmax over the label words).

The reference is the dev split, not the pool: random_real's sets are drawn from the pool, whose gradient would
favour them. Every gradient is the pretrained model's, where matching and fine-tuning both start.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.core.data import Example, Task, Template
from gradmm.core.matching import class_targets, cosine_distance_to_target, head_logits
from gradmm.core.models import last_hidden
from gradmm.core.scoring import first_label_ids, pad_left, prompt_ids, template_prompt
from gradmm.io.records import read_json, read_jsonl, read_text_rows
from gradmm.methods.full_gradient import fine_tuning_gradient, loss_gradient

log = logging.getLogger(__name__)

LOSSES = ("paper", "finetune")
GROUPS = ("last_block", "blocks", "all")


@dataclass
class TrainingSet:
    """One committed training set and the runs fine-tuned on it."""
    study: str
    dataset: str
    method: str
    file: str
    examples: list[Example]
    test_accuracy: float
    dev_accuracy: float
    runs: int


def collect_sets(studies: list[Path], dataset: str) -> list[TrainingSet]:
    """Every training set of `dataset` under the study folders that has fine-tuning results, each set once:
    a set already seen (the same texts and labels in another study, e.g. a shared random_real cell) is skipped."""
    seen, out = set(), []
    for study in studies:
        for set_path in sorted(Path(study).glob(f"{dataset}/*/trainset-*.jsonl")):
            results = [read_json(p) for p in sorted(set_path.parent.glob("result-*.json"))]
            results = [r for r in results if r.get("train_file") == set_path.name and r.get("finetuned", True)
                       and r.get("test_accuracy") is not None]
            rows = read_text_rows(set_path)
            key = hashlib.sha256("\n".join(f"{r['label']}\t{r['text']}" for r in rows).encode()).hexdigest()
            if not results or not rows or key in seen:
                continue
            seen.add(key)
            out.append(TrainingSet(Path(study).name, dataset, set_path.parent.name, str(set_path),
                                   [Example(r["text"], r["label"]) for r in rows],
                                   sum(r["test_accuracy"] for r in results) / len(results),
                                   sum(r["dev_accuracy"] for r in results) / len(results), len(results)))
    return out


def parameter_groups(model) -> dict[str, list[int]]:
    """Indices into the model's trainable parameters of each group: the last block, all blocks, every weight."""
    names = [name for name, p in model.named_parameters()]
    last = model.config.num_hidden_layers - 1
    return {"last_block": [i for i, n in enumerate(names) if f".layers.{last}." in n],
            "blocks": [i for i, n in enumerate(names) if ".layers." in n],
            "all": list(range(len(names)))}


def vocab_label_loss(model, tokenizer, examples: list[Example], template: Template) -> torch.Tensor:
    """The paper's loss: the label word's cross-entropy over the whole vocabulary at the prompt's last position."""
    device = next(model.parameters()).device
    ys = first_label_ids(tokenizer, template)
    seqs = [prompt_ids(tokenizer, template_prompt(tokenizer, template, ex.text)) for ex in examples]
    ids, mask = pad_left(seqs, tokenizer.pad_token_id, device)
    logits = head_logits(model, last_hidden(model, input_ids=ids, attention_mask=mask))
    return F.cross_entropy(logits, torch.tensor([ys[ex.label] for ex in examples], device=device))


def class_gradient(model, tokenizer, examples: list[Example], template: Template, loss: str) -> list[torch.Tensor]:
    """The gradient of the mean loss over `examples` w.r.t. every parameter (one tensor per parameter)."""
    if loss == "finetune":
        return fine_tuning_gradient(model, tokenizer, examples, template)
    return loss_gradient(model, examples, lambda batch: vocab_label_loss(model, tokenizer, batch, template))


def gram(vectors: list[list[torch.Tensor]], groups: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Per group, the (k, k) Gram matrix of k gradients given as per-parameter tensor lists (float32 products per
    parameter, summed over parameters in float64)."""
    per_param = []
    for tensors in zip(*vectors):
        stacked = torch.stack([t.reshape(-1) for t in tensors])
        per_param.append((stacked @ stacked.T).double())
    return {g: sum(per_param[i] for i in idx) for g, idx in groups.items()}


def distances(G: torch.Tensor, weights_set: list[float], weights_ref: list[float]) -> tuple[float, float]:
    """From the Gram matrix of [set class 0..C−1, reference class 0..C−1]: (mean class cosine distance,
    whole-set cosine distance with each side's classes weighted by its class shares)."""
    C = len(weights_set)
    cls = [1 - float(G[c, C + c] / (G[c, c] * G[C + c, C + c]).sqrt()) for c in range(C)]
    a = torch.tensor(list(weights_set) + [0.0] * C, dtype=G.dtype)  # the set's whole gradient, in G's basis
    b = torch.tensor([0.0] * C + list(weights_ref), dtype=G.dtype)  # the reference's
    whole = 1 - float((a @ G @ b) / ((a @ G @ a) * (b @ G @ b)).sqrt())
    return sum(cls) / C, whole


def measure_sets(model, tokenizer, task: Task, sets: list[TrainingSet], progress: bool = True,
                 partial: Path | None = None) -> list[dict]:
    """One row per set: its accuracies, size and every distance to the dev split's gradients. With `partial`, each
    finished row is appended there as it is made, and the rows already there are not measured again (a resumed
    run); the caller deletes it once the whole table is written."""
    done = {r["set_file"]: r for r in read_jsonl(partial)} if partial is not None and partial.is_file() else {}
    if done:
        log.info("%d of %d sets already measured in %s: resuming", len(done), len(sets), partial)
    template, C = task.template, task.n_classes
    model.requires_grad_(True)
    groups = parameter_groups(model)
    dev_by_class = [[ex for ex in task.dev if ex.label == c] for c in range(C)]
    dev_shares = [len(d) / len(task.dev) for d in dev_by_class]
    refs = {loss: [class_gradient(model, tokenizer, d, template, loss) for d in dev_by_class] for loss in LOSSES}
    with torch.no_grad():
        head_targets = class_targets(model, tokenizer, task.dev, template)
    rows = []
    for s in tqdm(sets, desc=f"gradient agreement {task.name}", disable=not progress):
        if s.file in done:
            rows.append(done[s.file])
            continue
        by_class = [[ex for ex in s.examples if ex.label == c] for c in range(C)]
        row = {"dataset": s.dataset, "study": s.study, "method": s.method, "set_file": s.file,
               "texts": len(s.examples), "runs": s.runs, "test_accuracy": s.test_accuracy,
               "dev_accuracy": s.dev_accuracy}
        if any(not b for b in by_class):  # a class without texts has no gradient to compare
            log.warning("%s: a class has no texts; its distances are left empty", s.file)
            rows.append(_finished(row, partial))
            continue
        with torch.no_grad():
            row["head_paper_class"] = sum(float(cosine_distance_to_target(model, tokenizer, [ex.text for ex in b],
                                                                           template, t))
                                          for b, t in zip(by_class, head_targets)) / C
        shares = [len(b) / len(s.examples) for b in by_class]
        for loss in LOSSES:
            grads = [class_gradient(model, tokenizer, b, template, loss) for b in by_class]
            for group, G in gram(grads + refs[loss], groups).items():
                row[f"{loss}_{group}_class"], row[f"{loss}_{group}_whole"] = distances(G, shares, dev_shares)
            del grads
        rows.append(_finished(row, partial))
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return rows


def _finished(row: dict, partial: Path | None) -> dict:
    if partial is not None:
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return row
