"""Fine-tune a causal LM on labelled texts with the prompt-based classification loss; select the LR on dev.

Protocol (the authors' addax/ code, scaled down): every run starts from a fresh copy of the base model, trains it with
AdamW on `scoring.template_prompt(text)` (the text cut to the task's max_text_tokens) -> cross-entropy over
the logits of the C label words (one token each: `scoring.first_label_ids`) at the last position, and is
evaluated by `scoring.predict`. The learning rate is chosen on the DEV split only
(ties go to the smaller LR); the TEST accuracy of that one model is what gets reported.

Differences from the authors' script (`addax/run.py`, HF Trainer), and why:
* Loss: the authors score each candidate by the length-normalised log-likelihood of all its option tokens
  and take the cross-entropy over candidates. For single-token label words (" great"/" bad", " positive"/
  " negative" with SmolLM2) that is exactly our loss: softmax over the candidates' log-probabilities equals
  softmax over their raw logits (the log-partition cancels). Label words of several tokens are refused
  (`first_label_ids`): a first-token loss would train another quantity than the one scoring averages.
* Model selection: the authors pick the best of 4 checkpoints and the best LR by *test* accuracy (eval set =
  test set: optimistic numbers). We keep the final model of each run and pick the LR by dev accuracy.
* Steps / batch / LRs: 200 steps of batch 16 with LR {7e-6, 1e-5, 1.5e-5} for Phi-1.5 (1.4B). A 135M model
  needs larger LRs and 2 CPU cores afford fewer steps: 20 steps of batch 8 (the feasibility protocol,
  ~8 epochs over 10 texts per class), LR grid {2e-5, 5e-5, 1e-4}.
* Kept from the authors: AdamW, no warm-up, linear decay to 0, weight decay 0, gradient-norm clipping at 1.0,
  fp32, the train seed fixes the data order.
"""

import contextlib
import copy
import gc
import logging
import time
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.config import FinetuneConfig
from gradmm.core.data import Example, Template
from gradmm.core.models import last_hidden, output_head
from gradmm.core.scoring import (
    accuracy,
    first_label_ids,
    pad_left,
    predict,
    prediction_shares,
    prompt_ids,
    template_prompt,
)

log = logging.getLogger(__name__)


def check_config(cfg: FinetuneConfig) -> None:
    if not cfg.learning_rates or any(lr <= 0 for lr in cfg.learning_rates):
        raise ValueError(f"finetune.learning_rates must be a non-empty list of positive LRs, got {cfg.learning_rates}")
    for key in ("steps", "batch_size", "eval_batch_size", "lora_r", "lora_alpha"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"finetune.{key} must be ≥ 1, got {getattr(cfg, key)}")
    for key in ("weight_decay", "max_grad_norm"):  # max_grad_norm 0 = no clipping
        if not getattr(cfg, key) >= 0:
            raise ValueError(f"finetune.{key} must be ≥ 0, got {getattr(cfg, key)}")
    if cfg.schedule not in ("linear", "constant"):
        raise ValueError(f"finetune.schedule {cfg.schedule!r}: use 'linear' or 'constant'")


def check_train_set(train: list[Example], n_classes: int, class_names: list[str] | None = None) -> list[str]:
    """Raise on an empty or mislabelled training set; return (and warn about) the classes it lacks."""
    if not train:
        raise ValueError("the training set is empty: nothing to fine-tune on (did filtering drop every text?)")
    names = class_names or [str(c) for c in range(n_classes)]
    bad = sorted({ex.label for ex in train if not 0 <= ex.label < n_classes})
    if bad:
        raise ValueError(f"training labels {bad} are outside 0..{n_classes - 1}")
    counts = Counter(ex.label for ex in train)
    missing = [names[c] for c in range(n_classes) if counts[c] == 0]
    if missing:
        warnings.warn(f"the training set has no example of class(es) {missing}: the model can only learn the others",
                      stacklevel=3)
    return missing


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Indices of each step's batch: consecutive slices of a stream of seeded permutations.

    Batches have min(batch_size, n) distinct indices: when an epoch ends inside a batch, indices of the next
    permutation that are already in the batch are left in the stream for the following batch.
    """
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, n)
    stream: list[int] = []
    batches = []
    for _ in range(steps):
        batch: list[int] = []
        while len(batch) < size:
            if all(i in batch for i in stream):  # also when empty: the next epoch's permutation
                stream += torch.randperm(n, generator=gen).tolist()
            batch.append(stream.pop(next(k for k, i in enumerate(stream) if i not in batch)))
        batches.append(batch)
    return batches


def label_logits(model, tokenizer, texts: list[str], template: Template, label_ids: list[int]) -> torch.Tensor:
    """(B, C) logits of the label words' tokens at the last position of each prompt (differentiable)."""
    device = next(model.parameters()).device
    seqs = [prompt_ids(tokenizer, template_prompt(tokenizer, template, t)) for t in texts]
    ids, mask = pad_left(seqs, tokenizer.pad_token_id, device)
    h = last_hidden(model, input_ids=ids, attention_mask=mask)
    W, b = output_head(model)
    rows = torch.tensor(label_ids, device=device)
    return F.linear(h, W[rows], None if b is None else b[rows]).float()  # only C rows of the head


def classification_loss(model, tokenizer, examples: list[Example], template: Template,
                        label_ids: list[int]) -> torch.Tensor:
    logits = label_logits(model, tokenizer, [ex.text for ex in examples], template, label_ids)
    target = torch.tensor([ex.label for ex in examples], device=logits.device)
    return F.cross_entropy(logits, target)


def _trainable_copy(base_model, cfg: FinetuneConfig):
    """A fresh copy of the frozen base model with its trainable parameters switched on; (model, to_eval)."""
    model = copy.deepcopy(base_model)
    if not cfg.lora:
        model.requires_grad_(True)
        return model, model
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                  target_modules=list(cfg.lora_target_modules), bias="none"))
    # The transformers model with the adapters injected: last_hidden() and scoring need its .base_model.
    return peft_model, peft_model.get_base_model()


def bf16_autocast(bf16: bool, device: torch.device):
    """Mixed precision for a model loaded in bf16: its fine-tuned copy keeps fp32 master weights (AdamW's updates
    of ~lr·|w| would vanish in bf16's 8-bit mantissa) and computes forward passes in bf16 on the bf16 units."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class Bf16Compute:
    """A bf16 copy of the fp32 master weights that does the forward and backward of each fine-tuning step.

    Autocast re-casts every fp32 weight in every forward and backward; this casts the masters once per step
    (one copy), runs the step on the bf16 units, and hands the gradients back to the masters in fp32, where
    fused AdamW updates them (benchmarks/bench_finetune.py measures the three ways)."""

    def __init__(self, base_model, master):
        self.model = copy.deepcopy(base_model).requires_grad_(True)  # the base is already bf16
        self.master = [p for p in master.parameters() if p.requires_grad]
        self.compute = [p for p in self.model.parameters() if p.requires_grad]
        if [p.shape for p in self.master] != [p.shape for p in self.compute]:
            raise ValueError("the bf16 copy's parameters do not line up with the master weights")

    @torch.no_grad()
    def pull(self):
        torch._foreach_copy_(self.compute, self.master)  # cast fp32 -> bf16 in one pass
        for p in self.compute:
            p.grad = None

    @torch.no_grad()
    def push_grads(self):
        for p, q in zip(self.master, self.compute):
            p.grad = None if q.grad is None else q.grad.float()


def train_copy(base_model, tokenizer, train: list[Example], template: Template, cfg: FinetuneConfig, lr: float,
               seed: int, progress: bool = True, on_step=None, stop_after: int | None = None):
    """Fine-tune a fresh copy of base_model; return (model in eval mode, per-step training losses).
    stop_after: stop after that many of cfg.steps steps (the schedule stays cfg.steps long): the model partway.

    A bf16 base model is trained in mixed precision (fp32 master weights, steps on a bf16 copy: Bf16Compute;
    autocast under LoRA); the returned copy is fp32.
    on_step(step, loss), if given, is called after every optimiser step (live tracking)."""
    check_config(cfg)
    if not train:
        raise ValueError("the training set is empty: nothing to fine-tune on")
    label_ids = first_label_ids(tokenizer, template)
    torch.manual_seed(seed)  # LoRA initialisation and any dropout
    wrapper, model = _trainable_copy(base_model, cfg)
    bf16 = base_model.dtype == torch.bfloat16
    if bf16:
        wrapper.float()
    # Full fine-tuning of a bf16 model steps a bf16 copy (Bf16Compute); LoRA's few adapter weights keep autocast
    compute = Bf16Compute(base_model, wrapper) if bf16 and not cfg.lora else None
    params = [p for p in wrapper.parameters() if p.requires_grad]
    # fp32 keeps the for-loop AdamW its committed results were made with; the bf16 path uses the fused kernel
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True if compute else None)
    decay = (lambda s: 1 - s / cfg.steps) if cfg.schedule == "linear" else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    losses = []
    model.train()
    if compute is not None:
        compute.model.train()
    bar = tqdm(batch_order(len(train), cfg.steps, cfg.batch_size, seed)[:stop_after], desc=f"fine-tune lr={lr:g}",
               disable=not progress, leave=False)
    for batch in bar:
        opt.zero_grad(set_to_none=True)
        if compute is not None:
            compute.pull()
            loss = classification_loss(compute.model, tokenizer, [train[i] for i in batch], template, label_ids)
            loss.backward()
            compute.push_grads()
        else:
            with bf16_autocast(bf16, base_model.device):
                loss = classification_loss(model, tokenizer, [train[i] for i in batch], template, label_ids)
            loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(len(losses) - 1, losses[-1])
    del opt, sched, params, compute
    model.eval()
    model.requires_grad_(False)
    return model, losses


def _evaluate(model, tokenizer, rows: list[Example], template: Template, cfg: FinetuneConfig, progress: bool,
              desc: str, bf16: bool = False) -> tuple[float, torch.Tensor]:
    with bf16_autocast(bf16, model.device):
        preds = predict(model, tokenizer, [ex.text for ex in rows], template, batch_size=cfg.eval_batch_size,
                        progress=progress, desc=desc)
    return accuracy(preds, rows), preds


def finetune_and_evaluate(base_model, tokenizer, train: list[Example], task, cfg: FinetuneConfig, seed: int,
                          progress: bool = True, log_metric=None) -> dict:
    """Train one copy per LR, keep the LR with the best dev accuracy, report that model's test accuracy.

    `base_model` is never modified. Returns a JSON-ready dict (see the keys at the end). log_metric(name, value,
    step), if given, receives each LR's loss per step (`train_loss/lr_<lr>`) and dev accuracy as they come.
    """
    log_metric = log_metric or (lambda name, value, step: None)
    check_config(cfg)
    start = time.perf_counter()
    first_label_ids(tokenizer, task.template)  # label words of one token each, before any training
    missing = check_train_set(train, task.n_classes, task.class_names)
    if not task.dev or not task.test:
        raise ValueError(f"task {task.name!r} needs non-empty dev (model selection) and test (reporting) splits")
    runs, best, best_model = [], None, None
    bf16 = base_model.dtype == torch.bfloat16
    for lr in sorted(cfg.learning_rates):  # ascending: a tie keeps the smaller LR (strict > below)
        t0 = time.perf_counter()
        model, losses = train_copy(base_model, tokenizer, train, task.template, cfg, lr, seed, progress,
                                   on_step=lambda step, loss, lr=lr: log_metric(f"train_loss/lr_{lr:g}", loss, step))
        dev_acc, dev_preds = _evaluate(model, tokenizer, task.dev, task.template, cfg, progress, f"dev lr={lr:g}",
                                       bf16)
        log_metric(f"dev_accuracy/lr_{lr:g}", dev_acc, len(losses))
        runs.append({"lr": lr, "dev_accuracy": dev_acc,
                     "dev_prediction_shares": prediction_shares(dev_preds, task.n_classes),
                     "train_loss_first": losses[0], "train_loss_last": losses[-1], "train_losses": losses,
                     "seconds": time.perf_counter() - t0})
        log.info("lr %g: dev accuracy %.4f, loss %.3f -> %.3f", lr, dev_acc, losses[0], losses[-1])
        if best is None or dev_acc > best["dev_accuracy"]:
            best, best_model = runs[-1], model
        else:
            del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    test_acc, test_preds = _evaluate(best_model, tokenizer, task.test, task.template, cfg, progress,
                                     f"test lr={best['lr']:g}", bf16)
    del best_model
    gc.collect()
    counts = Counter(ex.label for ex in train)
    return {
        "test_accuracy": test_acc,
        "test_prediction_shares": prediction_shares(test_preds, task.n_classes),
        "best_lr": best["lr"],
        "dev_accuracy": best["dev_accuracy"],
        "dev_accuracies": {str(r["lr"]): r["dev_accuracy"] for r in runs},  # every LR of the grid
        "runs": runs,
        "n_train": len(train),
        "train_class_counts": [counts[c] for c in range(task.n_classes)],
        "missing_classes": missing,
        "n_dev": len(task.dev),
        "n_test": len(task.test),
        "seed": seed,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lora": cfg.lora,
        "wall_seconds": time.perf_counter() - start,
    }
