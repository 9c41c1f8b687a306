"""The baselines' training sets at an equal budget of n texts per class: one builder per baseline.

A builder takes a `SetRequest` and returns (rows, info): the rows ({"text", "label"}) of the training set and
facts about how it was made. The registry (gradmm.methods.registry) names which builder a baseline uses;
`gradmm.methods.trainsets.make_trainset` calls it.
"""

from dataclasses import dataclass, replace
from functools import partial

from gradmm.config import ExperimentConfig, FilterConfig
from gradmm.core.data import Task
from gradmm.methods.features import lm_features
from gradmm.methods.filtering import checked_rows, filter_rows, score_rows
from gradmm.methods import llm_text
from gradmm.methods.llm_text import generate_llm_dataset, generate_llm_texts
from gradmm.methods.selection import select_coreset, select_random


@dataclass
class SetRequest:
    """What a builder may use: the model (None for the selection-only baselines), the task, the budget n per
    class, the seed, the experiment params (LM-text and coreset settings) and the filter params."""
    model: object
    tokenizer: object
    task: Task
    n: int
    seed: int
    experiment: ExperimentConfig
    filter: FilterConfig | None = None
    progress: bool = True


def _rows(examples) -> list[dict]:
    return [{"text": ex.text, "label": ex.label} for ex in examples]


def no_texts(req: SetRequest) -> tuple[list[dict], dict]:
    return [], {}


def random_real(req: SetRequest) -> tuple[list[dict], dict]:
    return _rows(select_random(req.task.pool, req.n, req.task.n_classes, req.seed)), {}


def _coreset(req: SetRequest, kind: str) -> tuple[list[dict], dict]:
    task = req.task
    feats = None  # MiniLM
    if req.experiment.coreset_features == "lm":
        feats = lm_features(req.model, req.tokenizer, [ex.text for ex in task.pool], task.template)
    return _rows(select_coreset(task.pool, kind, req.n, task.n_classes, req.seed, features=feats)), {}


def herding(req: SetRequest) -> tuple[list[dict], dict]:
    return _coreset(req, "herding")


def kcenter(req: SetRequest) -> tuple[list[dict], dict]:
    return _coreset(req, "kcenter")


def full_real(req: SetRequest) -> tuple[list[dict], dict]:
    return _rows(req.task.pool), {}


def _llm_text(req: SetRequest, shots: int, rank: str | None = None) -> tuple[list[dict], dict]:
    """LM samples under the label instruction (as many as GRADMM's raw texts, topped up for the classes the label
    check leaves short where experiment.llm_consistent_per_class says so), through GRADMM's filter (ranking with
    `rank` instead of filter.rank where given)."""
    model, tok, task = req.model, req.tokenizer, req.task
    cfg = req.filter if rank is None else replace(req.filter or FilterConfig(), rank=rank)
    raw = generate_llm_dataset(model, tok, task, req.experiment.llm_raw_per_class, req.seed, shots=shots,
                               progress=req.progress)
    rows = [{"text": ex.text, "label": ex.label, "seed": req.seed} for ex in raw]
    if req.experiment.llm_consistent_per_class:
        rows = _top_up(req, cfg or FilterConfig(), shots, rows)
    scored = score_rows(model, tok, task, rows)
    kept, stats = filter_rows(model, tok, task, scored, cfg, progress=req.progress)
    return kept, {"filter": stats, "raw": scored}  # every sample, kept or not, for inspection


def _top_up(req: SetRequest, cfg: FilterConfig, shots: int, rows: list[dict]) -> list[dict]:
    """`rows` and further LM draws (llm_raw_per_class texts each, independent of the first) of every class with fewer
    than experiment.llm_consistent_per_class texts past the label check, until it has that many or
    llm_max_raw_per_class raw texts. The LM writes some classes far less reliably than others (SmolLM2 passes 30 %
    of its rtpolarity negatives against 80 % of its positives), which otherwise leaves the short class's set smaller
    and unchosen."""
    exp, task = req.experiment, req.task
    passed = [0] * task.n_classes
    new = rows
    for draw in range(1, exp.llm_max_raw_per_class // exp.llm_raw_per_class):
        for r in checked_rows(req.model, req.tokenizer, task, new, cfg, progress=False)[0]:
            passed[r["label"]] += 1
        short = [c for c in range(task.n_classes) if passed[c] < exp.llm_consistent_per_class]
        if not short:
            break
        new = []
        for c in short:
            write = partial(llm_text.llm_few_shot_gen, shots=shots) if shots else generate_llm_texts
            texts = write(req.model, req.tokenizer, task, c, exp.llm_raw_per_class, req.seed, draw=draw,
                          progress=req.progress)
            new += [{"text": t, "label": c, "seed": req.seed, "draw": draw} for t in texts]
        seen = {(r["text"], r["label"]) for r in rows}
        new = [r for r in new if (r["text"], r["label"]) not in seen]
        rows = rows + new
    return rows


def llm_zero_shot_gen(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=0)


def llm_few_shot_gen(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=req.experiment.llm_shots)


# The same LM draws (same seeds) as the two above, but the label-consistent texts kept are the set whose fine-tuning
# gradient over every weight best matches the pool's (filter rank set_gradient), not the best texts one by one.
def gradmm_select_full(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=0, rank="set_gradient")


def gradmm_select_full_few_shot(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=req.experiment.llm_shots, rank="set_gradient")


# gradmm_select_full's choice matched at several checkpoints of fine-tuning on the pool (filter.path_steps), not only
# at the pretrained model: a set that pushes like the pool once the first steps have been taken, too
def gradmm_select_path(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=0, rank="set_gradient_path")


# gradmm_select_full's choice with each class matched against the pool's same class (the paper matches per class):
# the whole set's mean gradient let the choice lean to one class whenever both classes had texts to choose from
def gradmm_select_class(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=0, rank="set_gradient_class")


def gradmm_select_class_few_shot(req: SetRequest) -> tuple[list[dict], dict]:
    return _llm_text(req, shots=req.experiment.llm_shots, rank="set_gradient_class")
