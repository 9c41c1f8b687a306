"""`gradmm filter`: from raw synthetic texts to the training set (the authors' post-processing of the raw samples).

1. clean-up and de-duplication (empty texts and repeats out);
2. label consistency: the same LM classifies each text in context; texts it labels otherwise are dropped;
3. per class, rank by match loss + α·log-perplexity and keep the best `n_per_class` (or, `rank: set_gradient`,
   keep the set whose fine-tuning gradient over every weight best matches the pool's: not the authors'; with
   `set_gradient_path`, at several steps of fine-tuning on the pool, not only at the pretrained model; with
   `set_gradient_class`, each class's gradient against the pool's same class, as the paper matches per class);
4. class balance: every class is cut to the smallest class's count.

A class left with fewer than n_per_class texts is reported (a warning, and `short` in the stats); a set left
empty (a class with no label-consistent text empties every class once balanced) is reported as `empty`, and
fine-tuning then records no accuracy for it (gradmm.methods.trainsets.evaluate_method).

Where this differs from the authors' filtering code and why:
- the per-sample match loss is the one computed at generation time against the *same* target the texts were
  generated for (the authors recompute it from 20 real examples, and without DP noise even in DP runs);
- in DP runs the label filter uses no real demonstrations (the pool is private): zero-shot instead of few-shot;
- balancing cuts to equal counts (the authors drop high-score samples until the class means agree, which can
  leave 90 vs 10);
- no regex clean-up of Phi artefacts ("You", "Exercise", digit pairs): the projection emits word tokens only.
"""

import logging

from gradmm.config import FilterConfig, FinetuneConfig
from gradmm.core.data import TEMPLATES, Example, Task, Template, deduplicate
from gradmm.methods.finetune import train_copy
from gradmm.methods.full_gradient import (GradientSketch, choose_from_gram, class_gram_terms, class_norm_ratios,
                                          example_sketches, fine_tuning_gradient, gram_terms, path_gram_terms)
from gradmm.core.matching import class_targets, cosine_distance_to_target
from gradmm.core.perplexity import log_perplexity
from gradmm.core.scoring import first_label_ids, predict, sample_demos
from gradmm.methods.features import minilm_embeddings
from gradmm.methods.prompts import instruction, instruction_ids

log = logging.getLogger(__name__)


CLASSIFIERS = ("lm", "pool_logreg", "both")
# score: each text by its own match loss (+ α·log-perplexity); none: generation order; set_gradient: the set whose
# fine-tuning gradient over every weight is closest to the pool's (gradmm.methods.full_gradient); set_gradient_path:
# the same at several checkpoints of fine-tuning on the pool (filter.path_steps), each counting as much;
# set_gradient_class: every class's set against the pool's same class, in one cosine (bounds how much a class leans)
RANKS = ("score", "none", "set_gradient", "set_gradient_path", "set_gradient_class")
SET_RANKS = ("set_gradient", "set_gradient_path", "set_gradient_class")
# The pool fine-tuning whose checkpoints set_gradient_path matches at: the studies' recipe (20 steps of 8, linear
# decay; train_copy takes its LR from filter.path_lr)
PATH_RECIPE = FinetuneConfig()


def check_config(cfg: FilterConfig) -> None:
    if cfg.n_per_class < 1:
        raise ValueError(f"filter.n_per_class must be ≥ 1, got {cfg.n_per_class}")
    if cfg.classifier not in CLASSIFIERS:
        raise ValueError(f"filter.classifier {cfg.classifier!r}: use one of {CLASSIFIERS}")
    if cfg.rank not in RANKS:
        raise ValueError(f"filter.rank {cfg.rank!r}: use one of {RANKS}")
    if cfg.rank in SET_RANKS and not cfg.balance:
        raise ValueError(f"filter.rank={cfg.rank!r} chooses the same number of texts per class: set "
                         "filter.balance=true")
    bad = [s for s in cfg.path_steps if not 0 <= s <= PATH_RECIPE.steps]
    if not cfg.path_steps or bad or len(set(cfg.path_steps)) != len(cfg.path_steps):
        raise ValueError(f"filter.path_steps {cfg.path_steps}: distinct steps of the pool fine-tuning, each from 0 "
                         f"to {PATH_RECIPE.steps}")
    if not cfg.path_lr > 0:
        raise ValueError(f"filter.path_lr must be > 0, got {cfg.path_lr}")
    if cfg.label_shots < 0:
        raise ValueError(f"filter.label_shots must be ≥ 0, got {cfg.label_shots}")
    if cfg.label_template and cfg.label_template not in TEMPLATES and "{text}" not in cfg.label_template:
        raise ValueError(f"filter.label_template {cfg.label_template!r}: a name in {sorted(TEMPLATES)}, "
                         "a string holding {text}, or '' for the task's template")


def label_template(task: Task, cfg: FilterConfig) -> Template:
    """The template the label filter classifies with, cut to the task's max_text_tokens like the task's own."""
    if not cfg.label_template:
        return task.template
    if cfg.label_template in TEMPLATES:
        named = TEMPLATES[cfg.label_template]
        if len(named.label_words) != task.n_classes:
            raise ValueError(f"filter.label_template {cfg.label_template!r} has {len(named.label_words)} label words "
                             f"{list(named.label_words)} for {task.n_classes} classes {task.class_names}: set "
                             "filter.label_template='' to classify with the task's own template (data.template, "
                             "data.label_words), or a string holding {text}")
        return Template(named.format, named.label_words, task.max_text_tokens)
    return Template(cfg.label_template, task.template.label_words, task.max_text_tokens)


def filter_rows(model, tokenizer, task: Task, rows: list[dict], cfg: FilterConfig, private: bool = False,
                progress: bool = True) -> tuple[list[dict], dict]:
    """Apply the filter to raw rows (dicts with text, label, and for rank=score match_loss/log_perplexity)."""
    check_config(cfg)
    first_label_ids(tokenizer, task.template)  # one token per label word: the ranking's match loss needs it
    if cfg.rank in SET_RANKS and private:
        raise ValueError(f"filter.rank={cfg.rank!r} matches the private pool's gradient without noise: use 'score' "
                         "in DP runs")
    rows, stats = checked_rows(model, tokenizer, task, rows, cfg, private, progress)
    by_class = [[r for r in rows if r["label"] == c] for c in range(task.n_classes)]
    if cfg.rank == "score":
        by_class = [sorted(rs, key=lambda r: r["match_loss"] + cfg.alpha * r["log_perplexity"]) for rs in by_class]
    elif cfg.rank in SET_RANKS:
        by_class, stats["set_gradient"] = matching_set(model, tokenizer, task, by_class, cfg, progress)
    by_class = [rs[:cfg.n_per_class] for rs in by_class]
    before_balance = by_class
    if cfg.balance:
        m = min(len(rs) for rs in by_class)
        by_class = [rs[:m] for rs in by_class]
    kept = [r for rs in by_class for r in rs]
    stats["kept"] = _counts(kept, task.n_classes)
    stats["short"] = [name for name, k in zip(task.class_names, stats["kept"]) if k < cfg.n_per_class]
    stats["empty"] = not kept
    if stats["short"]:
        none_passed = [name for name, rs in zip(task.class_names, before_balance) if not rs]
        log.warning("filter: kept per class %s of n_per_class=%d%s%s", dict(zip(task.class_names, stats["kept"])),
                    cfg.n_per_class, f"; no text of {none_passed} passed" if none_passed else "",
                    " — the training set is EMPTY: its method gets no accuracy" if not kept else "")
    return kept, stats


def checked_rows(model, tokenizer, task: Task, rows: list[dict], cfg: FilterConfig, private: bool = False,
                 progress: bool = True) -> tuple[list[dict], dict]:
    """Steps 1 and 2: the rows left after clean-up, de-duplication and the label check, and their counts."""
    template = label_template(task, cfg) if cfg.label_filter else None  # fails before any scoring
    stats = {"raw": _counts(rows, task.n_classes)}
    keep = set(deduplicate([Example(r["text"], r["label"]) for r in rows]))
    rows = [r for r in rows if Example(r["text"], r["label"]) in keep and len(r["text"].split()) >= 2]
    rows = list({(r["text"], r["label"]): r for r in rows}.values())  # first copy of exact repeats
    stats["deduplicated"] = _counts(rows, task.n_classes)
    if cfg.label_filter and cfg.classifier != "lm" and private:
        raise ValueError(f"filter.classifier={cfg.classifier!r} is trained on the private pool: use 'lm' in DP runs")
    if cfg.label_filter and rows and cfg.classifier in ("lm", "both"):
        shots = 0 if private else cfg.label_shots
        demos = sample_demos(task.pool, shots, task.n_classes, cfg.seed)
        preds = predict(model, tokenizer, [r["text"] for r in rows], template, demos,
                        progress=progress, desc="label filter")
        rows = [r for r, p in zip(rows, preds.tolist()) if p == r["label"]]
        stats["label_consistent"] = _counts(rows, task.n_classes)
    if cfg.label_filter and rows and cfg.classifier in ("pool_logreg", "both"):
        preds, stats["classifier_dev_accuracy"] = pool_classifier_predictions(task, [r["text"] for r in rows])
        rows = [r for r, p in zip(rows, preds) if p == r["label"]]
        stats["classifier_consistent"] = _counts(rows, task.n_classes)
    return rows, stats


def matching_set(model, tokenizer, task: Task, by_class: list[list[dict]], cfg: FilterConfig,
                 progress: bool = True) -> tuple[list[list[dict]], dict]:
    """Per class, the rows of the set (the same count per class, at most n_per_class) whose fine-tuning gradient
    over every weight is closest in cosine to the pool's (gradmm.methods.full_gradient); with how close it came."""
    m = min(cfg.n_per_class, *(len(rs) for rs in by_class))
    if m == 0:
        return [[] for _ in by_class], {}
    rows = [r for rs in by_class for r in rs]
    labels = [r["label"] for r in rows]
    examples = [Example(r["text"], r["label"]) for r in rows]
    sketch = GradientSketch(model, seed=cfg.seed)
    terms, references = [], None
    if cfg.rank == "set_gradient_class":
        references = [sketch(fine_tuning_gradient(model, tokenizer, [ex for ex in task.pool if ex.label == c],
                                                  task.template)) for c in range(len(by_class))]
        gram = class_gram_terms(example_sketches(model, tokenizer, examples, task.template, sketch, progress), labels,
                                references)
    else:
        for step in (cfg.path_steps if cfg.rank == "set_gradient_path" else [0]):
            # the pool's own fine-tuning, stopped after `step` steps (seeded by filter.seed): the weights to match at
            at = model if step == 0 else train_copy(model, tokenizer, task.pool, task.template, PATH_RECIPE,
                                                    cfg.path_lr, cfg.seed, progress, stop_after=step)[0]
            reference = sketch(fine_tuning_gradient(at, tokenizer, task.pool, task.template))
            terms.append(gram_terms(example_sketches(at, tokenizer, examples, task.template, sketch, progress),
                                    reference))
            del at
        gram = terms[0] if len(terms) == 1 else path_gram_terms(terms)
    kept, info = choose_from_gram(*gram, labels, m)
    if references is not None:
        info["class_norm_ratio"] = class_norm_ratios(gram[0], labels, kept, references)
    if len(terms) > 1:
        info["path_steps"] = list(cfg.path_steps)
    kept = sorted(kept)
    return [[rows[i] for i in kept if rows[i]["label"] == c] for c in range(len(by_class))], info


def pool_classifier_predictions(task: Task, texts: list[str]) -> tuple[list[int], float]:
    """Labels of texts by a logistic regression on MiniLM sentence embeddings fitted to the pool, and that
    classifier's accuracy on the dev split (a label checker that is itself checked; a variant of the study)."""
    from sklearn.linear_model import LogisticRegression  # heavy: imported where used, not at every CLI start

    clf = LogisticRegression(max_iter=2000).fit(minilm_embeddings([ex.text for ex in task.pool]).numpy(),
                                                [ex.label for ex in task.pool])
    dev_acc = float(clf.score(minilm_embeddings([ex.text for ex in task.dev]).numpy(), [ex.label for ex in task.dev]))
    return clf.predict(minilm_embeddings(texts).numpy()).tolist(), dev_acc


def score_rows(model, tokenizer, task: Task, rows: list[dict]) -> list[dict]:
    """Add the per-sample match loss (against the clean class target) and the log-perplexity (given the
    class instruction) to rows that lack them: LM-generated baselines then go through the same ranking."""
    targets = class_targets(model, tokenizer, task.pool, task.template)
    out = [dict(r) for r in rows]
    for c in range(task.n_classes):
        idx = [i for i, r in enumerate(out) if r["label"] == c]
        if not idx:
            continue
        texts = [out[i]["text"] for i in idx]
        losses = cosine_distance_to_target(model, tokenizer, texts, task.template, targets[c], per_sample=True)
        prefix = instruction_ids(tokenizer, task, instruction(task, c))
        for i, text, loss in zip(idx, texts, losses.tolist()):
            ids = tokenizer(" " + text, add_special_tokens=False).input_ids
            out[i].setdefault("match_loss", round(loss, 6))
            out[i].setdefault("log_perplexity", round(log_perplexity(model, [ids], prefix).item(), 6))
    return out


def _counts(rows: list[dict], n_classes: int) -> list[int]:
    return [sum(r["label"] == c for r in rows) for c in range(n_classes)]

