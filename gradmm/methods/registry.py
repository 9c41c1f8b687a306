"""Every method the experiments compare, one record each: everything the code asks about a method name.

    in_context   zero_shot, few_shot: no fine-tuning (few_shot: n demonstrations per class in the prompt)
    real         random_real, herding, kcenter (n real texts per class of the pool), full_real (the whole pool)
    lm_text      llm_zero_shot_gen, llm_few_shot_gen: LM-sampled texts under a label instruction, then the filter;
                 gradmm_select_full(_few_shot): the same texts, the set kept by matching the full fine-tuning gradient
    gradmm       GRADMM and its variants (overrides of the generate / dp / filter params), then the filter;
                 `<variant>_no_filter` is the same raw texts without the filter

A baseline's training set comes from its `build` function (gradmm.methods.baselines); a GRADMM variant's from
its generation run through the filter. `gradmm.methods.trainsets.make_trainset` is the one place either happens.

Adding a baseline is one builder function in gradmm/methods/baselines.py and one `Method` record in BASELINES
below; the CLI stages, the studies and the reports then accept its name (docs/method.md shows an example).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from gradmm.methods import baselines

KINDS = ("in_context", "real", "lm_text", "gradmm")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # one of KINDS
    build: Callable | None = None  # baselines: (SetRequest) -> (rows, info); None for GRADMM variants
    overrides: dict = field(default_factory=dict)  # GRADMM variants: {section: {key: value}} over params.yaml
    filtered: bool = True  # GRADMM: raw texts through the label filter and ranking (False: <variant>_no_filter)
    per_seed_set: bool = False  # a new set for every fine-tuning seed (real subsets drawn with that seed)
    in_studies: bool = True  # the variants, privacy and transfer studies accept it

    @property
    def finetuned(self) -> bool:
        return self.kind != "in_context"

    @property
    def generated(self) -> bool:
        """Texts written by a GRADMM run (a generate stage, then the filter)."""
        return self.kind == "gradmm"

    @property
    def variant(self) -> str | None:
        """The GRADMM variant whose raw texts this method uses (gradmm_no_filter -> gradmm); None for baselines."""
        return self.name.removesuffix("_no_filter") if self.generated else None

    @property
    def private(self) -> bool:
        return bool(self.overrides.get("dp", {}).get("enabled"))


BASELINES = {m.name: m for m in (
    # few_shot's training set is its prompt's demonstrations; the studies fine-tune, so they leave it out
    Method("zero_shot", "in_context", baselines.no_texts),
    Method("few_shot", "in_context", baselines.random_real, in_studies=False),
    Method("random_real", "real", baselines.random_real, per_seed_set=True),
    Method("herding", "real", baselines.herding, per_seed_set=True),
    Method("kcenter", "real", baselines.kcenter, per_seed_set=True),
    Method("llm_zero_shot_gen", "lm_text", baselines.llm_zero_shot_gen),
    Method("llm_few_shot_gen", "lm_text", baselines.llm_few_shot_gen),
    # Matching that chooses among unconstrained LM text (any token, any length): the set whose fine-tuning gradient
    # over every weight matches the pool's (gradmm.methods.full_gradient), from the two rows above' LM draws
    Method("gradmm_select_full", "lm_text", baselines.gradmm_select_full),
    Method("gradmm_select_full_few_shot", "lm_text", baselines.gradmm_select_full_few_shot),
    Method("gradmm_select_path", "lm_text", baselines.gradmm_select_path),  # matched along the pool's fine-tuning
    Method("gradmm_select_class", "lm_text", baselines.gradmm_select_class),  # each class against its own class
    Method("gradmm_select_class_few_shot", "lm_text", baselines.gradmm_select_class_few_shot),
    Method("full_real", "real", baselines.full_real),
)}

# GRADMM variants: overrides of the generate / dp / filter sections (the faithful settings are the defaults).
# The variants study (gradmm.experiments.variants) measures them against each other.
GENERATORS = {
    "gradmm": {},
    "gradmm_dp": {"dp": {"enabled": True}},
    "gradmm_no_projection": {"generate": {"projection": "end_only"}},
    "gradmm_no_matching": {"generate": {"matching_weight": 0.0}},  # the gradient's own value
    # a template whose label word is probable; its 11 fixed tokens need a longer cap for the same free length
    "gradmm_review": {"generate": {"template": "review", "max_seq_len": 40}},
    "gradmm_centered": {"generate": {"center": True}},  # the component shared by all classes removed
    "gradmm_joint": {"generate": {"joint": True}},  # all classes against the pool's fine-tuning gradient
    # An ADMM that settles: the exact Z-step for the LM regulariser (argmin −log p(z) + ρ/2‖z − X − Λ/ρ‖², so a
    # Z at X is a fixed point), ρ started where the penalty and matching gradients are of one scale and grown
    # every outer step (continuation), more inner steps, stop when < 10 % of tokens change
    "gradmm_converge": {"generate": {"order": "proximal", "rho": 0.05, "rho_growth": 2.5, "lr": 0.02, "inner_steps": 8,
                                     "stop_changed_fraction": 0.1}},
    "gradmm_lm_init": {"generate": {"init": "lm"}},  # GRADMM refining LM samples of the class
    "gradmm_pool_filter": {"filter": {"classifier": "both"}},  # + a pool-trained classifier checked on dev
    # The screen's two best variants by dev accuracy, combined (it did worse than either on dev and test)
    "gradmm_review_centered": {"generate": {"template": "review", "max_seq_len": 40, "center": True}},
    # The variants study's pick on the dev split: the best mean dev accuracy over the grid's four panels
    # (rtpolarity and tweets, n = 10 and 20; reports/tables/variants.md), i.e. gradmm_centered's settings
    "gradmm_plus": {"generate": {"center": True}},
    # The paper's ADMM schedule (30 outer × 50 inner steps, Adam lr 0.008, 500 initial candidates) instead of
    # the study's 6 × 6: does the short CPU schedule explain the gap to real text? (profiles/paper-smollm2.yaml)
    "gradmm_paper_schedule": {"generate": {"outer_steps": 30, "inner_steps": 50, "lr": 0.008, "init_candidates": 500}},
    # Readable and matched: the LM's own label-conditioned text (best of 4 batches by f), refined against the
    # centred class target by 40 exact token swaps, each among the LM's top-40 next tokens (gradmm.core.swaps);
    # no ADMM. The settings are an earlier scratch probe's on rtpolarity, not tuned on any test split.
    "gradmm_swap": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4,
                                 "swap_steps": 40, "swap_candidates": 48, "swap_next_topk": 40}},
    # gradmm_swap's starting point, the swaps off: what the swaps add is the difference (same seeds, same texts)
    "gradmm_swap_start": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4}},
    # Matching chooses, never edits: the same 4 LM batches as gradmm_swap_start (same seeds), but the B of their
    # 4·B rows whose set matches the centred target best (exact row exchanges from the best batch): readable
    # by construction; whether a closer match makes better training data is the difference to gradmm_swap_start
    "gradmm_select": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4,
                                   "init_select": "rows"}},
    # No matching at all: the first of those LM batches (same seeds), kept as drawn. Against gradmm_swap_start
    # (best batch by f) and gradmm_select (best rows by f): does choosing by the match make better training data?
    "gradmm_lm_start": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 1}},
    # gradmm_select from twice the LM rows: 8 batches drawn, the first 4 those of gradmm_select (same seeds), so
    # its pool holds gradmm_select's: does a wider choice by the match make better training data?
    "gradmm_select_wide": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 8,
                                        "init_select": "rows"}},
    # gradmm_select matching the gradient of the loss the sets are trained with (softmax over the label words, as
    # fine-tuning) instead of the paper's over the whole vocabulary: the rows that move the classifier as the pool does
    "gradmm_select_finetune_loss": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4,
                                                 "init_select": "rows", "match_softmax": "label_words"}},
    # gradmm_select over LM rows written after 4 real texts of the class (the llm_few_shot_gen prompt, a new draw of
    # pool texts per candidate batch): candidates in the dataset's own wording, which zero-shot text lacks
    "gradmm_select_few_shot": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4,
                                            "init_select": "rows", "init_shots": 4}},
    # gradmm_select over nucleus samples (top-p 0.9, Holtzman et al. 2020): more fluent candidates to choose from
    "gradmm_select_nucleus": {"generate": {"init": "lm", "center": True, "outer_steps": 0, "init_candidates": 4,
                                           "init_select": "rows", "init_top_p": 0.9}},
}

METHODS = {**BASELINES,
           **{g: Method(g, "gradmm", overrides=ov) for g, ov in GENERATORS.items()},
           **{f"{g}_no_filter": Method(f"{g}_no_filter", "gradmm", overrides=ov, filtered=False, in_studies=False)
              for g, ov in GENERATORS.items()}}


def all_methods() -> list[str]:
    return list(METHODS)


def check_method(name: str, allowed=None) -> None:
    allowed = all_methods() if allowed is None else list(allowed)
    if name not in allowed:
        raise ValueError(f"unknown method {name!r}: use one of {allowed}")


def get(name: str) -> Method:
    check_method(name)
    return METHODS[name]


def names(kind: str | None = None, *, in_studies: bool | None = None, filtered: bool | None = None) -> list[str]:
    """Method names in registry order, optionally of one kind / accepted by the studies / with the filter."""
    return [m.name for m in METHODS.values() if (kind is None or m.kind == kind)
            and (in_studies is None or m.in_studies == in_studies) and (filtered is None or m.filtered == filtered)]


VARIANT_SECTIONS = ("generate", "dp", "filter")


def variant_settings(generator: str, params: dict | None = None) -> dict:
    """A GRADMM variant's settings, {section: {key: value}} over the generate / dp / filter params.

    A params file's `variants.<generator>` wins over the definition above: params.yaml lists the pipeline's
    generators there, and DVC's generate and filter stages track each one's entry, so editing a variant's
    settings re-runs that variant's stages only. Without an entry (a study's params file), the definition above.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown variant {generator!r}: use one of {sorted(GENERATORS)}")
    own = (params or {}).get("variants") or {}
    unknown = sorted(set(own) - set(GENERATORS))
    if unknown:
        raise ValueError(f"params section variants: {unknown} are not GRADMM variants; use any of {sorted(GENERATORS)}")
    if generator not in own:
        return GENERATORS[generator]
    settings = own[generator] or {}
    if not isinstance(settings, dict) or any(s not in VARIANT_SECTIONS or not isinstance(kv, dict)
                                             for s, kv in settings.items()):
        raise ValueError(f"params variants.{generator} must map some of the sections {list(VARIANT_SECTIONS)} to "
                         f"key: value settings (e.g. {{generate: {{center: true}}}}), got {settings!r}")
    return settings


def variant_overrides(generator: str, params: dict | None = None) -> list[str]:
    """`section.key=value` overrides that turn the params into a GRADMM variant (`variant_settings`)."""
    return [f"{section}.{k}={json.dumps(v)}" for section, kv in variant_settings(generator, params).items()
            for k, v in kv.items()]


def generator_of(method: str) -> str | None:
    """The GRADMM variant a method's texts come from (gradmm_no_filter -> gradmm), or None (a baseline, or unknown)."""
    return METHODS[method].variant if method in METHODS else None


# The order of the paper's tables: no training data, real subsets, LM-generated, GRADMM and its ablations, all real.
METHOD_ORDER = ["zero_shot", "few_shot", "random_real", "herding", "kcenter", "llm_zero_shot_gen", "llm_few_shot_gen",
                "gradmm", "gradmm_no_filter", "gradmm_no_projection", "gradmm_no_matching", "gradmm_dp",
                "gradmm_dp_no_filter", "full_real"]


def method_rank(method: str) -> tuple[float, str]:
    """Sort key: the fixed order above; other GRADMM variants just before full_real; unknown names last."""
    if method in METHOD_ORDER:
        return METHOD_ORDER.index(method), method
    if method.startswith("gradmm"):
        return METHOD_ORDER.index("full_real") - 0.5, method
    return len(METHOD_ORDER), method


def ordered_methods(methods) -> list[str]:
    return sorted(set(methods), key=method_rank)
