"""`gradmm generate`: class targets (optionally DP), ADMM batches per class, raw synthetic texts.

A run directory holds `run_config.json` (the params it was started with), one result file per finished
batch, a checkpoint for the batch in progress, and at the end `raw.jsonl` + `generate_metrics.json`.
Restarting the same command continues where it stopped; a directory started with other params is refused.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gradmm.admm import GenerateConfig, JointProblem, Layout, Problem, check_config, run_batch
from gradmm.config import as_dict, config_hash
from gradmm.data import TEMPLATES, DataConfig, Task, load_task
from gradmm.dp import MECHANISMS, noisy_target
from gradmm.matching import Target, class_targets, joint_target
from gradmm.scoring import first_label_ids, prompt_ids
from gradmm.models import ModelConfig, load_model
from gradmm.projection import allowed_token_mask
from gradmm.records import write_json, write_jsonl, write_text
from gradmm.worksharing import shared_loop

log = logging.getLogger(__name__)


@dataclass
class DPConfig:
    enabled: bool = False
    epsilon: float = 0.05  # the paper's DP setting
    delta: float = 1e-4
    clip_norm: float = 1.0  # C: per-example gradient clipping (paper: 1.0)
    mechanism: str = "analytic"  # analytic (Balle & Wang 2018) | classical | official (the authors' code)
    relation: str = "zero_out"  # neighbouring datasets: zero_out (C/n, as the authors) | replace_one (2C/n)
    noise_seed: int = 0


def check_dp(cfg: DPConfig) -> None:
    if not cfg.enabled:
        return
    if not cfg.epsilon > 0:
        raise ValueError(f"dp.epsilon must be > 0, got {cfg.epsilon}")
    if not 0 < cfg.delta < 1:
        raise ValueError(f"dp.delta must be in (0, 1), got {cfg.delta}")
    if not cfg.clip_norm > 0:
        raise ValueError(f"dp.clip_norm must be > 0, got {cfg.clip_norm}")
    if cfg.mechanism not in MECHANISMS:
        raise ValueError(f"dp.mechanism {cfg.mechanism!r}: use one of {sorted(MECHANISMS)}")


def build_targets(model, tokenizer, task: Task, gen: GenerateConfig, dp: DPConfig) -> tuple[list[Target], list]:
    """One target per class from the generation pool (or one joint target); with DP, clipped and noised once
    (SNR per target). `task.template` is the template matched (see `matching_task`)."""
    if dp.enabled and gen.center:
        raise ValueError("generate.center with dp.enabled is not supported yet: the pool's mean hidden state "
                         "would need its own privatisation")
    center = "pool" if gen.center else None
    if gen.joint:  # one target: the whole pool's gradient, each example for its own label
        targets = [joint_target(model, tokenizer, task.pool, task.template, center=center)]
    else:
        targets = class_targets(model, tokenizer, task.pool, task.template, center=center)
    if not dp.enabled:
        return targets, [None] * len(targets)
    noisy = [noisy_target(t, dp.epsilon, dp.delta, dp.clip_norm, dp.mechanism, dp.relation, seed=dp.noise_seed + c)
             for c, t in enumerate(targets)]
    return [t for t, _ in noisy], [snr for _, snr in noisy]


def decoding_prefix_ids(tokenizer, task: Task, label: int, gen: GenerateConfig) -> list[int]:
    """The label-conditioned instruction the LM decodes after: the same prompt as the llm_zero_shot_gen
    baseline, so that gradmm_no_matching differs from it only by the top-k projection."""
    if gen.decoding_prefix == "none":
        return []
    from gradmm.baselines import instruction_ids, instruction

    return instruction_ids(tokenizer, task, instruction(task, label))


def matching_task(task: Task, gen: GenerateConfig) -> Task:
    """The task with the template whose gradient is matched (generate.template; issue 9 a)."""
    if not gen.template:
        return task
    if gen.template not in TEMPLATES:
        raise ValueError(f"generate.template {gen.template!r}: use '' (the task's own) or one of {sorted(TEMPLATES)}")
    template = TEMPLATES[gen.template]
    if len(template.label_words) != task.n_classes:
        raise ValueError(f"generate.template {gen.template!r} has {len(template.label_words)} label words for "
                         f"{task.n_classes} classes")
    return replace(task, template=template)


def sequence_length(tokenizer, task: Task, label: int | None, gen: GenerateConfig, dp: DPConfig) -> int:
    """L of a class's sequences (label None: of a joint batch, over the whole pool)."""
    if gen.seq_len:
        return gen.seq_len
    if dp.enabled:  # the real mean length is not private: use the public cap
        return gen.max_seq_len
    lengths = [len(prompt_ids(tokenizer, task.template.prompt(ex.text)))
               for ex in task.pool if label is None or ex.label == label]
    return min(gen.max_seq_len, int(sum(lengths) / len(lengths)))


def guard_run_dir(out: Path, params: dict, archive_stale: bool = False) -> None:
    """Refuse to mix runs: a directory started with other params is left untouched, or (archive_stale, as
    the DVC stage asks) moved whole to an .archive/ folder beside it, so that nothing finished is deleted."""
    path = out / "run_config.json"
    blob = json.dumps(params, indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text() != blob:
        if not archive_stale:
            raise ValueError(f"{out} holds a run with different params ({path}); use another output directory, "
                             "or delete that one yourself if its work is no longer wanted")
        archive = out.parent / ".archive" / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        archive.parent.mkdir(parents=True, exist_ok=True)
        out.rename(archive)
        log.info("moved the run with other params to %s", archive)


def task_fingerprint(task: Task) -> dict:
    pool = json.dumps([[ex.text, ex.label] for ex in task.pool])
    return {"name": task.name, "template": task.template.format, "label_words": list(task.template.label_words),
            "pool_sha256": hashlib.sha256(pool.encode()).hexdigest()}


def generate(task: Task | DataConfig, model_cfg: ModelConfig, gen: GenerateConfig, dp: DPConfig, out: Path,
             progress: bool = True, archive_stale: bool = False) -> dict:
    """Run (or resume) a generation; writes out/raw.jsonl and out/generate_metrics.json, returns the metrics."""
    check_config(gen)
    check_dp(dp)
    out = Path(out)
    task = load_task(task) if isinstance(task, DataConfig) else task
    params = {"task": task_fingerprint(task), "model": as_dict(model_cfg), "generate": as_dict(gen), "dp": as_dict(dp)}
    guard_run_dir(out, params, archive_stale)
    start = time.perf_counter()
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    allowed = allowed_token_mask(tok, model.get_input_embeddings().weight.shape[0])
    check_config(gen, int(allowed.sum()))
    task = matching_task(task, gen)
    # The model's BOS (Gemma) opens every synthetic sequence, as it opens every real prompt (scoring.prompt_ids).
    prefix_ids = prompt_ids(tok, task.template.prefix)
    suffix_ids = tok(task.template.suffix, add_special_tokens=False).input_ids
    groups = [None] if gen.joint else list(range(task.n_classes))  # None: one joint group of all classes
    layouts = [Layout(prefix_ids, suffix_ids, sequence_length(tok, task, c, gen, dp)) for c in groups]
    for layout in layouts:
        layout.check()  # before the targets and the ADMM: the expensive part
    if gen.joint and gen.batch_size % task.n_classes:
        raise ValueError(f"generate.joint needs batch_size ({gen.batch_size}) divisible by {task.n_classes} classes")
    out.mkdir(parents=True, exist_ok=True)  # only a run that passed every check claims the directory
    write_text(out / "run_config.json", json.dumps(params, indent=2, sort_keys=True) + "\n")
    targets, snrs = build_targets(model, tok, task, gen, dp)
    (out / "batches").mkdir(exist_ok=True)
    rows, per_group, history = [], [], []
    for g, c in enumerate(groups):
        layout = layouts[g]
        if c is None:
            problem = JointProblem(model, targets[0], layout,
                                   [decoding_prefix_ids(tok, task, k, gen) for k in range(task.n_classes)],
                                   first_label_ids(tok, task.template), allowed, gen)
            name, n_batches, row_labels = "joint", gen.n_per_class * task.n_classes // gen.batch_size, problem.row_class.tolist()
        else:
            problem = Problem(model, targets[c], layout, decoding_prefix_ids(tok, task, c, gen), allowed, gen)
            name, n_batches, row_labels = f"class{c}", gen.n_per_class // gen.batch_size, [c] * gen.batch_size
        def batch_file(b, name=name):
            return out / "batches" / f"{name}-batch{b}.pt"

        def run_one(b, c=c, name=name, problem=problem, n_batches=n_batches):
            log.info("%s batch %d/%d", name if c is None else task.class_names[c], b + 1, n_batches)
            seed = gen.seed * 1_000_003 + (task.n_classes if c is None else c) * 1_009 + b  # own stream per batch
            ckpt = out / "batches" / f"{name}-batch{b}.ckpt"
            result = run_batch(problem, gen.batch_size, seed, ckpt, progress)
            torch.save(result, batch_file(b).with_suffix(".tmp"))
            batch_file(b).with_suffix(".tmp").replace(batch_file(b))
            ckpt.unlink(missing_ok=True)

        # Other processes started with the same command take the batches this one has not (worksharing).
        shared_loop(range(n_batches), lambda b: out / "batches" / ".locks" / batch_file(b).name, lambda b: batch_file(b).exists(),
                    run_one)
        results = [torch.load(batch_file(b), map_location="cpu", weights_only=False) for b in range(n_batches)]
        for b, result in enumerate(results):
            for i, ids in enumerate(result["ids"]):
                text = tok.decode(ids[layout.free].tolist(), skip_special_tokens=True).strip()
                rows.append({"text": text, "label": row_labels[i], "match_loss": round(result["per_sample_loss"][i].item(), 6),
                             "log_perplexity": round(result["logppl"][i].item(), 6), "batch": b, "seed": gen.seed})
        per_group.append({
            "class": "joint" if c is None else task.class_names[c], "seq_len": layout.seq_len, "snr": snrs[g],
            "f_Z": [r["f_Z"] for r in results], "f_X_final": [r["f_X_final"] for r in results],
            "last_changed_fraction": [r["history"][-1].get("changed_fraction") for r in results],
            "mean_log_perplexity": sum(r["logppl"].mean().item() for r in results) / len(results)})
        history += [{"class": name if c is None else c, "batch": b, **rec} for b, r in enumerate(results)
                    for rec in r["history"]]
    write_jsonl(out / "history.jsonl", history)  # atomic: workers that finish together write the same file
    write_jsonl(out / "raw.jsonl", rows)
    metrics = {"dataset": task.name, "model": model_cfg.name, "params_hash": config_hash(model_cfg, gen, dp),
               "n_raw": len(rows), "classes": per_group, "dp": dp.enabled,
               "wall_seconds_this_call": round(time.perf_counter() - start, 1)}
    write_json(out / "generate_metrics.json", metrics)
    return metrics
