"""`gradmm generate`: class targets (optionally DP), ADMM batches per class, raw synthetic texts.

A run directory holds `run_config.json` (the params it was started with), one result file per finished
batch, a checkpoint for the batch in progress, and at the end `raw.jsonl` + `generate_metrics.json`.
Restarting the same command continues where it stopped; a directory started with other params is refused.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gradmm.config import (
    DEFAULT_MAX_TEXT_TOKENS,
    DataConfig,
    DPConfig,
    GenerateConfig,
    ModelConfig,
    as_dict,
    config_hash,
)
from gradmm.core.admm import JointProblem, Layout, Problem, check_config, run_batches
from gradmm.core.data import TEMPLATES, Task, default_wording, load_task
from gradmm.core.dp import MECHANISMS, noise_generator, noisy_target
from gradmm.core.matching import Target, class_targets, joint_target, target_on
from gradmm.core.models import input_embeddings, load_model, load_tokenizer
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import first_label_ids, prompt_ids, template_prompt
from gradmm.io.ray_engine import LOCAL, Engine, run_on_ray
from gradmm.io.records import write_json, write_jsonl
from gradmm.io.tensorfiles import load_tensors, save_tensors
from gradmm.io.worksharing import check_claim, claimed_run_dir, file_lock, shared_loop
from gradmm.methods.prompts import class_demos, instruction, instruction_ids

log = logging.getLogger(__name__)


def check_dp(cfg: DPConfig, gen: GenerateConfig | None = None) -> None:
    if not cfg.enabled:
        return
    if gen is not None and gen.center:
        raise ValueError("generate.center with dp.enabled is not supported yet: the pool's mean hidden state "
                         "would need its own privatisation")
    if gen is not None and gen.init_shots:
        raise ValueError(f"generate.init_shots={gen.init_shots} with dp.enabled: the demonstrations would show "
                         "private pool texts to the LM; use init_shots: 0")
    if gen is not None and gen.match_softmax != "vocabulary":
        raise ValueError(f"generate.match_softmax {gen.match_softmax!r} with dp.enabled is not supported yet: the DP "
                         "release stores the vocabulary target; use 'vocabulary'")
    if not cfg.epsilon > 0:
        raise ValueError(f"dp.epsilon must be > 0, got {cfg.epsilon}")
    if not 0 < cfg.delta < 1:
        raise ValueError(f"dp.delta must be in (0, 1), got {cfg.delta}")
    if not cfg.clip_norm > 0:
        raise ValueError(f"dp.clip_norm must be > 0, got {cfg.clip_norm}")
    if cfg.mechanism not in MECHANISMS:
        raise ValueError(f"dp.mechanism {cfg.mechanism!r}: use one of {sorted(MECHANISMS)}")
    if cfg.noise_seed_not_private is not None:
        log.warning("dp.noise_seed_not_private=%s: the DP noise is reproducible from the config, so the output is "
                    "NOT differentially private (for tests only)", cfg.noise_seed_not_private)


def build_targets(model, tokenizer, task: Task, gen: GenerateConfig, dp: DPConfig) -> tuple[list[Target], list]:
    """One target per class from the generation pool (or one joint target); with DP, clipped and noised once
    (SNR per target). `task.template` is the template matched (see `matching_task`)."""
    check_dp(dp, gen)
    center = "pool" if gen.center else None
    words = gen.match_softmax == "label_words"
    if gen.joint:  # one target: the whole pool's gradient, each example for its own label
        targets = [joint_target(model, tokenizer, task.pool, task.template, center=center, label_words_only=words)]
    else:
        targets = class_targets(model, tokenizer, task.pool, task.template, center=center, label_words_only=words)
    if not dp.enabled:
        return targets, [None] * len(targets)
    generator = noise_generator(dp.noise_seed_not_private)  # one stream: every class gets its own draw
    noisy = [noisy_target(t, dp.epsilon, dp.delta, dp.clip_norm, dp.mechanism, dp.relation, generator)
             for t in targets]
    return [t for t, _ in noisy], [snr for _, snr in noisy]


def decoding_prefix_ids(tokenizer, task: Task, label: int, gen: GenerateConfig) -> list[int]:
    """The label-conditioned instruction the LM decodes after: the same prompt as the llm_zero_shot_gen
    baseline, so that gradmm_no_matching differs from it only by the top-k projection."""
    if gen.decoding_prefix == "none":
        return []

    return instruction_ids(tokenizer, task, instruction(task, label))


SAMPLING_DEMO_DRAWS = 16  # few-shot instructions per class for init lm; a candidate batch's seed picks one


def sampling_prefix_ids(tokenizer, task: Task, label: int, gen: GenerateConfig) -> list[list[int]]:
    """generate.init_shots > 0: few-shot instructions of the class (the llm_few_shot_gen prompt), each with its own
    draw of init_shots pool texts of the class, so that the candidate batches do not all imitate the same texts.
    [] for zero-shot sampling."""
    if not gen.init_shots:
        return []
    try:
        draws = [class_demos(task, label, gen.init_shots, f"init-shots-{gen.seed}-{label}-{j}")
                 for j in range(SAMPLING_DEMO_DRAWS)]
    except ValueError as e:
        raise ValueError(f"generate.init_shots={gen.init_shots}: {e}") from None
    return [instruction_ids(tokenizer, task, instruction(task, label, demos)) for demos in draws]


def matching_task(task: Task, gen: GenerateConfig) -> Task:
    """The task with the template whose gradient is matched (generate.template; the review-template variant)."""
    if not gen.template:
        return task
    if gen.template not in TEMPLATES:
        raise ValueError(f"generate.template {gen.template!r}: use '' (the task's own) or one of {sorted(TEMPLATES)}")
    template = TEMPLATES[gen.template]
    if len(template.label_words) != task.n_classes:
        raise ValueError(f"generate.template {gen.template!r} has {len(template.label_words)} label words for "
                         f"{task.n_classes} classes")
    return replace(task, template=replace(template, max_text_tokens=task.max_text_tokens))  # the task's truncation


def sequence_length(tokenizer, task: Task, label: int | None, gen: GenerateConfig, dp: DPConfig) -> int:
    """L of a class's sequences (label None: of a joint batch, over the whole pool)."""
    if gen.seq_len:
        return gen.seq_len
    if dp.enabled:  # the real mean length is not private: use the public cap
        return gen.max_seq_len
    lengths = [len(prompt_ids(tokenizer, template_prompt(tokenizer, task.template, ex.text)))
               for ex in task.pool if label is None or ex.label == label]
    return min(gen.max_seq_len, int(sum(lengths) / len(lengths)))


def task_fingerprint(task: Task) -> dict:
    pool = json.dumps([[ex.text, ex.label] for ex in task.pool])
    # The instruction's words and the truncation only when they differ from the dataset's defaults, so that
    # runs started before these were task properties still resume.
    defaults = dict(zip(("domain", "description"), default_wording(task.name)), max_text_tokens=DEFAULT_MAX_TEXT_TOKENS)
    described = {k: getattr(task, k) for k in defaults if getattr(task, k) != defaults[k]}
    return {"name": task.name, "template": task.template.format, "label_words": list(task.template.label_words),
            "pool_sha256": hashlib.sha256(pool.encode()).hexdigest(), **described}


def released_targets(out: Path, model, tokenizer, task: Task, gen: GenerateConfig, dp: DPConfig) -> tuple[list[Target], list]:
    """The class targets of a DP run, as released: noised once per run directory, from OS entropy.

    The noised targets are the private release: they are kept in out/dp_targets.safetensors, so that an
    interrupted run resumes byte-identical and processes sharing the run share one draw (a second draw
    would be a second release). Neither the clean targets nor the noise are written anywhere; the SNR kept
    beside the release is a one-number diagnostic of the clean target's norm, not covered by the noise.
    """
    path = out / "dp_targets.safetensors"
    with file_lock(out / ".dp_targets.lock"):  # one process draws, the others read its draw
        if not path.exists():
            targets, snrs = build_targets(model, tokenizer, task, gen, dp)
            tensors, meta = {}, []
            for g, t in enumerate(targets):
                G_W, G_b = t.dense()
                tensors[f"G_W.{g}"], tensors[f"G_b.{g}"] = G_W.float(), None if G_b is None else G_b.float()
                meta.append({"label_id": t.label_id, "has_bias": t.has_bias, "sigma": t.sigma, "snr": snrs[g]})
            del targets, G_W, G_b  # the clean factors and the noise leave memory with them
            save_tensors(path, tensors, {"targets": meta, "private": dp.noise_seed_not_private is None})
    tensors, meta = load_tensors(path)
    dev = next(model.parameters()).device
    released = [Target.released(tensors[f"G_W.{g}"].to(dev), None if tensors[f"G_b.{g}"] is None
                                else tensors[f"G_b.{g}"].to(dev), m["label_id"], m["has_bias"], m["sigma"])
                for g, m in enumerate(meta["targets"])]
    return released, [m["snr"] for m in meta["targets"]]


def save_batch_result(path: Path, result: dict) -> None:
    save_tensors(path, {k: result[k] for k in BATCH_TENSORS}, {k: v for k, v in result.items() if k not in BATCH_TENSORS})


def load_batch_result(path: Path) -> dict:
    tensors, meta = load_tensors(path)
    return {**tensors, **meta}


BATCH_TENSORS = ("ids", "per_sample_loss", "logppl")


@dataclass
class GroupSpec:
    """Everything one group's (a class's, or the joint batch's) ADMM problem needs but the model: what a Ray
    worker receives to build the problem on its own copy of the model."""

    target: Target
    layout: Layout
    decoding_prefixes: list[list[int]]  # one per class of the group
    label_ids: list[int] | None  # the joint batch's label token per class; None for one class
    allowed: torch.Tensor
    cfg: GenerateConfig
    sampling_prefixes: list[list[int]] = field(default_factory=list)  # init lm's few-shot instructions (init_shots)


def build_problem(model, spec: GroupSpec) -> Problem:
    target = target_on(spec.target, input_embeddings(model).device)
    allowed = spec.allowed.to(input_embeddings(model).device)
    if spec.label_ids is not None:
        return JointProblem(model, target, spec.layout, spec.decoding_prefixes, spec.label_ids, allowed, spec.cfg)
    return Problem(model, target, spec.layout, spec.decoding_prefixes[0], allowed, spec.cfg, spec.sampling_prefixes)


def unit_lock_name(names: list[str], unit: tuple[int, list[int]]) -> str:
    """A unit's lock file: one batch keeps the batch's own name (runs started before units existed share it)."""
    g, batches = unit
    first, last = batches[0], batches[-1]
    return f"{names[g]}-batch{first}.safetensors" if first == last else f"{names[g]}-batches{first}-{last}.safetensors"


class GenerationWorker:
    """A Ray actor: loads the model once, then runs units of ADMM batches sent by `generate` (engine Ray)."""

    def __init__(self, model_cfg: ModelConfig, specs: list[GroupSpec], batch_size: int):
        model, _ = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
        self.problems, self.batch_size = [build_problem(model, spec) for spec in specs], batch_size

    def run(self, g: int, todo: list[int], seeds: list[int], ckpts: list[Path]) -> list[dict]:
        return run_batches(self.problems[g], self.batch_size, seeds, ckpts, progress=False)



def generate(task: Task | DataConfig, model_cfg: ModelConfig, gen: GenerateConfig, dp: DPConfig, out: Path,
             progress: bool = True, archive_stale: bool = False, engine: Engine = LOCAL) -> dict:
    """Run (or resume) a generation; writes out/raw.jsonl and out/generate_metrics.json, returns the metrics.

    Every check that can fail on the inputs runs before the directory is claimed and before the model loads,
    so a refused run leaves the directory free for the corrected one. `engine`: where the units of work (one or
    `parallel_batches` ADMM batches of a class) run: here, shared with other processes running the same command
    (file locks), or on Ray workers; the texts are the same.
    """
    check_config(gen)
    check_dp(dp, gen)
    out = Path(out)
    task = load_task(task) if isinstance(task, DataConfig) else task
    params = {"task": task_fingerprint(task), "model": as_dict(model_cfg), "generate": as_dict(gen), "dp": as_dict(dp)}
    start = time.perf_counter()
    tok = load_tokenizer(model_cfg.name)
    check_config(gen, int(allowed_token_mask(tok).sum()))
    task = matching_task(task, gen)
    label_ids = first_label_ids(tok, task.template)  # refuses label words the tokenizer cannot carry
    # The model's BOS (Gemma) opens every synthetic sequence, as it opens every real prompt (scoring.prompt_ids).
    prefix_ids = prompt_ids(tok, task.template.prefix)
    suffix_ids = tok(task.template.suffix, add_special_tokens=False).input_ids
    groups = [None] if gen.joint else list(range(task.n_classes))  # None: one joint group of all classes
    layouts = [Layout(prefix_ids, suffix_ids, sequence_length(tok, task, c, gen, dp)) for c in groups]
    for layout in layouts:
        layout.check()
    if gen.joint and gen.batch_size % task.n_classes:
        raise ValueError(f"generate.joint needs batch_size ({gen.batch_size}) divisible by {task.n_classes} classes")
    sampling = [sampling_prefix_ids(tok, task, c, gen) if c is not None else [] for c in groups]
    with claimed_run_dir(out, params, archive_stale):  # only a run that passed every check claims it
        model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
        allowed = allowed_token_mask(tok, model.get_input_embeddings().weight.shape[0])
        if dp.enabled:
            targets, snrs = released_targets(out, model, tok, task, gen, dp)
        else:
            targets, snrs = build_targets(model, tok, task, gen, dp)
        (out / "batches").mkdir(exist_ok=True)
        specs, names, n_batches, row_labels = [], [], [], []
        for g, c in enumerate(groups):
            prefixes = [decoding_prefix_ids(tok, task, k, gen) for k in (range(task.n_classes) if c is None else [c])]
            specs.append(GroupSpec(targets[g], layouts[g], prefixes, label_ids if c is None else None, allowed, gen,
                                   sampling[g]))
            names.append("joint" if c is None else f"class{c}")
            n_batches.append(gen.n_per_class * (task.n_classes if c is None else 1) // gen.batch_size)
            row_labels.append(JointProblem.row_classes(task.n_classes, gen.batch_size).tolist() if c is None
                              else [c] * gen.batch_size)

        def batch_file(g, b):
            return out / "batches" / f"{names[g]}-batch{b}.safetensors"

        # A unit of work: parallel_batches batches of one group stepped together (one batch: the paper's loop).
        K = gen.parallel_batches
        units = [(g, list(range(u, min(u + K, n_batches[g])))) for g in range(len(groups))
                 for u in range(0, n_batches[g], K)]

        def unit_call(unit):
            """(group, batches still to do, their seeds, their checkpoints); own random stream per batch."""
            g, batches = unit
            todo = [b for b in batches if not batch_file(g, b).exists()]
            seeds = [gen.seed * 1_000_003 + (task.n_classes if groups[g] is None else groups[g]) * 1_009 + b for b in todo]
            return g, todo, seeds, [out / "batches" / f"{names[g]}-batch{b}.ckpt" for b in todo]

        def save_unit(call, results):
            g, todo, _, ckpts = call
            for b, ckpt, result in zip(todo, ckpts, results):
                save_batch_result(batch_file(g, b), result)
                ckpt.unlink(missing_ok=True)

        def unit_done(unit):
            return all(batch_file(unit[0], b).exists() for b in unit[1])

        if engine.workers:  # Ray: the units go to `workers` actors, each holding the model once
            calls = [unit_call(u) for u in units if not unit_done(u)]
            check_claim(out, params)

            def save_and_recheck(call, results):  # a finished unit is kept; then stop if another run took the dir
                save_unit(call, results)
                check_claim(out, params)

            run_on_ray(GenerationWorker, (model_cfg, specs, gen.batch_size), calls, engine, save_and_recheck,
                       gpus=1 if next(model.parameters()).device.type == "cuda" else 0)
        else:
            problems = [build_problem(model, spec) for spec in specs]

            def run_unit(u):
                check_claim(out, params)  # a run with other params must not have taken the directory meanwhile
                call = unit_call(units[u])
                g, todo = call[0], call[1]
                log.info("%s batch %s/%d", names[g] if groups[g] is None else task.class_names[groups[g]],
                         ", ".join(str(b + 1) for b in todo), n_batches[g])
                save_unit(call, run_batches(problems[g], gen.batch_size, call[2], call[3], progress))

            # Other processes started with the same command take the units this one has not (worksharing).
            shared_loop(range(len(units)), lambda u: out / "batches" / ".locks" / unit_lock_name(names, units[u]),
                        lambda u: unit_done(units[u]), run_unit)
        rows, per_group, history = [], [], []
        for g, c in enumerate(groups):
            layout, name = layouts[g], names[g]
            results = [load_batch_result(batch_file(g, b)) for b in range(n_batches[g])]
            for b, result in enumerate(results):
                for i, ids in enumerate(result["ids"]):
                    text = tok.decode(ids[layout.free].tolist(), skip_special_tokens=True).strip()
                    rows.append({"text": text, "label": row_labels[g][i], "match_loss": round(result["per_sample_loss"][i].item(), 6),
                                 "log_perplexity": round(result["logppl"][i].item(), 6), "batch": b, "seed": gen.seed})
            per_group.append({
                "class": "joint" if c is None else task.class_names[c], "seq_len": layout.seq_len, "snr": snrs[g],
                "f_Z": [r["f_Z"] for r in results], "f_X_final": [r["f_X_final"] for r in results],
                "last_changed_fraction": [r["history"][-1].get("changed_fraction") if r["history"] else None
                                          for r in results],
                "outer_steps_run": [len(r["history"]) for r in results],
                "mean_log_perplexity": sum(r["logppl"].mean().item() for r in results) / len(results),
                **({"f_Z_before_swaps": [r["f_Z_before_swaps"] for r in results]} if gen.swap_steps else {}),
                # f of each LM batch drawn at the start: [0] = no matching's pick, min = the best batch
                **({"f_init_candidates": [r["f_init_candidates"] for r in results]} if gen.init == "lm" else {})})
            history += [{"class": name if c is None else c, "batch": b, **rec} for b, r in enumerate(results)
                        for rec in r["history"]]
        write_jsonl(out / "history.jsonl", history)  # atomic: workers that finish together write the same file
        write_jsonl(out / "raw.jsonl", rows)
        metrics = {"dataset": task.name, "model": model_cfg.name, "params_hash": config_hash(model_cfg, gen, dp),
                   "n_raw": len(rows), "classes": per_group, "dp": dp.enabled,
                   "wall_seconds_this_call": round(time.perf_counter() - start, 1)}
        write_json(out / "generate_metrics.json", metrics)
    return metrics
