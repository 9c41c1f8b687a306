"""trl-style configs: one dataclass per params.yaml section, overridable with `section.key=value`."""

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ParamsLoader(yaml.SafeLoader):
    """PyYAML (YAML 1.1) plus YAML 1.2's floats: ruamel (DVC's `exp run -S`, `gradmm profile`) writes 2e-05,
    which YAML 1.1 reads as a string."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=ParamsLoader)


# One dataclass per params.yaml section; each stage reads its own section. Checks that need the
# section's module (a tokenizer, a model, the method registry) live beside it (admm.check_config, ...).

# Longer texts keep their first 128 tokens (the head: a headline, a first sentence); every text of the
# rtpolarity, tweets and imdb splits is shorter (at most 76 SmolLM2 tokens), so none of them is cut.
DEFAULT_MAX_TEXT_TOKENS = 128  # texts are cut to their first N tokens (scoring, matching, fine-tuning)
PROBE = "minilm"  # the transfer study's non-causal target: a logistic-regression probe on MiniLM features


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"  # an OFFLINE_MODELS name, a local folder, or a hub id (internet)
    device: str = "auto"  # auto = CUDA when present
    dtype: str = "float32"  # float32 | bfloat16 (GPU, or a CPU with amx_bf16/avx512_bf16) | auto


@dataclass
class DataConfig:
    dataset: str = "tweets"  # tweets | rtpolarity | imdb | sst2 | rotten_tomatoes | tweet_emotion | local
    data_dir: str | None = None  # holds rtpolarity/ and imdb/; default GRADMM_DATA_DIR or ../shared/data
    source: str | None = None  # hub id or local folder for hub datasets; file path for `local`
    name: str = ""  # `local` only: the dataset's name in results and output folders; default the file's stem
    text_field: str = "text"  # `local` only
    label_field: str = "label"  # `local` only
    label_names: list[str] = field(default_factory=list)  # `local` only: class names, in label order
    template: str = "paper"  # a name in TEMPLATES, or a custom string holding {text}
    label_words: list[str] = field(default_factory=list)  # one per class; empty = the template's own
    # What the generation instruction asks for ("Write one short {domain} {description}."); "" = the dataset's own
    domain: str = ""  # what one text is: "movie review", "tweet", "news headline" (default for `local`: "text")
    description: str = ""  # a text of class {label}: "with {label} sentiment", "about {label}"
    max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS  # texts are cut to their first N tokens (scoring, matching, fine-tuning)
    pool_per_class: int = 50  # real examples per class the generator may see (the authors: 50 in all, ≈ 25 per class)
    dev_per_class: int = 100
    test_per_class: int = 200
    split_seed: int = 0  # fixed across method seeds so every method is tested on the same rows


@dataclass
class GenerateConfig:
    n_per_class: int = 20  # raw synthetic texts per class (before filtering) = batches × batch_size
    batch_size: int = 10  # B: sequences matched jointly against the class target (paper: 10)
    seq_len: int = 0  # L incl. template tokens; 0 = mean real prompt length (the paper's auto length)
    max_seq_len: int = 32  # cap on L (and L itself for DP runs: the real mean length is not private)
    outer_steps: int = 10  # paper: 30
    inner_steps: int = 10  # paper: 50
    lr: float = 0.01  # Adam on X (paper: 0.008)
    rho: float = 0.1  # ADMM penalty (paper sweeps 0.01–5)
    adaptive_rho: bool = False  # residual balancing (Boyd et al. 2011, sec. 3.4.1): ×/÷ 2 when residuals differ 10×
    rho_growth: float = 1.0  # ρ ← ρ·growth after every outer iteration (>1: continuation, X is pulled onto Z)
    topk: int = 200  # candidates per position in the Z-step (paper: 200)
    order: str = "nearest_then_probable"  # the authors' code; probable_then_nearest = the paper reader's;
    # proximal = the exact Z-step for h(z) = −log p(z): the LM's favourite at small ρ, the nearest token at large ρ
    projection: str = "admm"  # admm | end_only (the gradmm_no_projection ablation: optimise X, decode once)
    init_candidates: int = 16  # random batches scored at initialisation, best kept (paper: 500)
    init_norm: float = 0.0  # norm of each initial position vector; 0 = the model's median embedding norm
    grad_clip: float = 1.0  # on the X gradient's total norm (paper script: 1.0)
    matching_weight: float = 1.0  # 0 = the gradmm_no_matching ablation (prefix, projection and filter only)
    center: bool = False  # variants study, centring: subtract the pool's mean final hidden state before the cosine
    # The cross-entropy whose head gradient is matched: vocabulary = the paper's (the label word against every
    # token); label_words = fine-tuning's (softmax over the label words only, gradmm.methods.finetune)
    match_softmax: str = "vocabulary"
    stop_changed_fraction: float = 0.0  # stop once fewer than this share of tokens change (0 = never)
    stop_patience: int = 0  # stop once f(Z) has not improved on its best for this many Z-steps (0 = never)
    # Batches of a class stepped together in one forward/backward (the maths stays per batch: own X, Adam, Λ, ρ,
    # stop); more rows per matrix product cost less per text. 1 = one batch at a time (the committed results)
    parallel_batches: int = 1
    decoding_prefix: str = "instruction"  # instruction (label-conditioned, as the authors) | none
    template: str = ""  # the template whose gradient is matched: a name in data.TEMPLATES; "" = the task's own
    joint: bool = False  # joint target: every batch holds all classes, matched against the whole pool's gradient
    init: str = "random"  # random (the paper) | lm: start from LM samples under the class instruction (a variant)
    # How init lm keeps B of its init_candidates × B samples: batch = the best whole batch by f; rows = the B
    # rows with the lowest set f (best batch first, then exact row exchanges while f falls): matching chooses
    # the texts but never edits them
    init_select: str = "batch"
    init_top_p: float = 1.0  # nucleus sampling of the LM samples (1 = plain ancestral sampling)
    # init lm: real texts of the class from the pool shown in the LM's instruction (few-shot, the
    # llm_few_shot_gen prompt), a fresh draw for every candidate batch; 0 = zero-shot. Not with DP (the pool is private)
    init_shots: int = 0
    # Exact token swaps after ADMM (gradmm.core.swaps): each step applies the swap that lowers f(Z) most among
    # `swap_candidates` ranked by the first-order change of f, each token among the LM's `swap_next_topk` next
    # tokens at its position (fluency). 0 = none (the paper). With outer_steps 0 and init lm there is no ADMM:
    # the LM's own text is refined.
    swap_steps: int = 0
    swap_candidates: int = 48
    swap_next_topk: int = 40
    seed: int = 0


@dataclass
class DPConfig:
    enabled: bool = False
    epsilon: float = 0.05  # the paper's DP setting
    delta: float = 1e-4
    clip_norm: float = 1.0  # C: per-example gradient clipping (paper: 1.0)
    mechanism: str = "analytic"  # analytic (Balle & Wang 2018) | classical | official (the authors' code)
    relation: str = "zero_out"  # neighbouring datasets: zero_out (C/n, as the authors) | replace_one (2C/n)
    # The noise comes from OS entropy. A fixed seed makes it reproducible and so NOT private (anyone with the
    # config can regenerate and subtract it): for tests only.
    noise_seed_not_private: int | None = None


@dataclass
class FilterConfig:
    n_per_class: int = 10  # the budget: texts per class in the final training set
    label_filter: bool = True  # drop texts the LM classifies as another class
    label_template: str = "review"  # template the filter classifies with ("" = the task's own; "review" is binary)
    label_shots: int = 4  # demonstrations per class from the pool (forced to 0 in DP runs)
    classifier: str = "lm"  # who checks labels: lm (in context, the paper) | pool_logreg | both (variants study)
    rank: str = "score"  # score = match_loss + alpha·log_perplexity | none (generation order) | set_gradient(_path, _class)
    # set_gradient_path: match at these steps of fine-tuning on the pool (0 = the pretrained model), with this LR
    path_steps: list[int] = field(default_factory=lambda: [0, 5, 10, 15])
    path_lr: float = 5e-5
    alpha: float = 0.0  # weight of log-perplexity in the score (the authors try 0 and 0.05)
    balance: bool = True  # cut every class to the same count
    seed: int = 0  # choice of the label filter's demonstrations


@dataclass
class FinetuneConfig:
    learning_rates: list[float] = field(default_factory=lambda: [2e-5, 5e-5, 1e-4])  # grid; best on dev
    steps: int = 20  # optimiser steps per run (feasibility: 20 steps of 8 ≈ 8 epochs over 20 texts)
    batch_size: int = 8  # capped at the training-set size (a batch never holds the same text twice)
    weight_decay: float = 0.0  # HF Trainer default, as in the authors' script
    max_grad_norm: float = 1.0  # HF Trainer default clipping; 0 disables
    schedule: str = "linear"  # linear (decay to 0, no warm-up: HF default) | constant
    eval_batch_size: int = 32  # scoring batch for dev/test
    lora: bool = False  # LoRA adapters (peft) instead of full fine-tuning: for large models on a GPU
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # Llama/Phi names


@dataclass
class ExperimentConfig:
    datasets: list[str] = field(default_factory=lambda: ["tweets", "rtpolarity"])
    seeds: list[int] = field(default_factory=lambda: [0])
    # the budgets n (the filter keeps n per class; baselines select n per class): a list is the pipeline's grid,
    # one stage call uses one n (at_budget)
    n_per_class: list[int] | int = field(default_factory=lambda: [10])
    generators: list[str] = field(default_factory=lambda: ["gradmm"])  # GRADMM variants to generate
    baselines: list[str] = field(default_factory=lambda: ["zero_shot", "random_real", "llm_zero_shot_gen"])
    methods: list[str] = field(default_factory=lambda: ["zero_shot", "random_real", "llm_zero_shot_gen", "gradmm"])
    llm_raw_per_class: int = 20  # LM samples per class before the filter (as many as GRADMM's raw texts)
    # 0: one draw. Otherwise a class with fewer texts past the label check gets further draws of llm_raw_per_class,
    # up to llm_max_raw_per_class raw texts
    llm_consistent_per_class: int = 0
    llm_max_raw_per_class: int = 0
    llm_shots: int = 4  # real demonstrations per class in llm_few_shot_gen's instruction
    coreset_features: str = "minilm"  # minilm | lm (the LM's own last hidden state)


@dataclass
class StudyConfig:
    datasets: list[str] = field(default_factory=lambda: ["rtpolarity"])
    n_per_class: list[int] = field(default_factory=lambda: [10])  # budgets n
    raw_per_class: int = 20  # texts every generating method writes per class before the filter
    generation_seeds: list[int] = field(default_factory=lambda: [0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # fine-tuning seeds (random_real: subsets)
    methods: list[str] = field(default_factory=lambda: ["random_real", "llm_zero_shot_gen", "gradmm"])
    generate: dict = field(default_factory=dict)  # generate.* overrides for every GRADMM variant (the schedule)
    finetune: dict = field(default_factory=dict)  # finetune.* overrides for every method (e.g. the LR grid)
    diagnostics_sets: int = 5  # disjoint dev sets of 10 per kind for the class-discrimination diagnostic
    # The cheap first pass (`gradmm study --screen`): these keys replace the study's own for the variants that
    # were only screened (e.g. {datasets: [rtpolarity], n_per_class: [10], methods: [...]}).
    screen: dict = field(default_factory=dict)


@dataclass
class PrivacyConfig:
    datasets: list[str] = field(default_factory=lambda: ["rtpolarity"])
    n_per_class: int = 10  # the study budget whose training sets are attacked
    methods: list[str] = field(default_factory=lambda: ["random_real", "llm_zero_shot_gen", "gradmm"])
    attack_lr: float = 5.0e-5  # one fine-tuning run per attacked set (no dev search: the attacker's model)
    attack_seed: int = 0
    members: int = 100  # pool members attacked against as many dev non-members (at most the smaller split)
    canaries: int = 4  # canary sentences added to the generation pool
    canary_repeats: int = 1  # copies of each
    canary_alternatives: int = 999  # random secrets each canary is ranked among (|R| = this + 1)
    canary_method: str = "gradmm"  # the GRADMM variant that generates from the canaried pool
    epsilons: list[float] = field(default_factory=lambda: [10.0, 1.0, 0.05])  # DP sweep; ∞ = the study's gradmm
    dp_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds per ε
    second_model: str = ""  # the report's second perplexity scorer (notebook 02); '' = none


@dataclass
class TransferConfig:
    datasets: list[str] = field(default_factory=lambda: ["rtpolarity"])
    targets: list[str] = field(default_factory=lambda: ["gemma3-270m", PROBE])
    n_per_class: int = 10  # the study budget whose sets are transferred
    methods: list[str] = field(default_factory=lambda: ["zero_shot", "random_real", "llm_zero_shot_gen", "gradmm"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    generation_seed: int = 0  # which generated set of the study
    finetune: dict = field(default_factory=dict)  # finetune.* overrides for causal targets (e.g. the LR grid)
    probe_c: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])  # the probe's C grid, picked on dev



SECTIONS = {"model": ModelConfig, "data": DataConfig, "generate": GenerateConfig, "dp": DPConfig, "filter": FilterConfig, "finetune": FinetuneConfig, "experiment": ExperimentConfig, "study": StudyConfig, "privacy": PrivacyConfig, "transfer": TransferConfig}


def section_classes() -> dict:
    """The config dataclass of each params.yaml section."""
    return dict(SECTIONS)


def field_defaults() -> dict[str, list]:
    """Each config field name -> its defaults over the sections that have it (a run recorded before a field
    existed ran as that field's default does: gradmm.io.worksharing)."""
    out: dict[str, list] = {}
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.setdefault(f.name, []).append(value)
    return out


# Inclusive (low, high) bounds of the numeric params that their stage's own check (admm.check_config,
# finetune.check_config, ...) does not cover; `build` applies them to a value or to each element of a list.
BOUNDS = {
    "data.split_seed": (0, None),
    "generate.seq_len": (0, None),  # 0 = the real prompts' mean length
    "generate.max_seq_len": (1, None),
    "generate.init_norm": (0, None),  # 0 = the model's median embedding norm
    "generate.matching_weight": (0, None),
    "generate.stop_changed_fraction": (0, 1),
    "generate.stop_patience": (0, None),
    "generate.seed": (0, None),
    "generate.swap_steps": (0, None),
    "generate.swap_candidates": (1, None),
    "generate.swap_next_topk": (1, None),
    "dp.noise_seed_not_private": (0, None),
    "filter.alpha": (0, None),
    "filter.seed": (0, None),
    "experiment.seeds": (0, None),
    "experiment.llm_raw_per_class": (1, None),
    "experiment.llm_consistent_per_class": (0, None),
    "experiment.llm_max_raw_per_class": (0, None),
    "experiment.llm_shots": (0, None),
    "study.generation_seeds": (0, None),
    "study.seeds": (0, None),
    "study.diagnostics_sets": (1, None),
    "privacy.attack_seed": (0, None),
    "privacy.dp_seeds": (0, None),
    "transfer.seeds": (0, None),
    "transfer.generation_seed": (0, None),
}

# How a type reads in an error message, alone and in a list.
_TYPE_NAMES = {int: ("an integer", "integers"), float: ("a finite number", "finite numbers"),
               bool: ("true or false", "true/false values"), str: ("a string", "strings"),
               dict: ("a mapping", "mappings"), type(None): ("null", "nulls")}


def _alternatives(annotation) -> tuple:
    """int | None -> (int, NoneType); list[int] | int -> (list[int], int); int -> (int,)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _type_name(annotation, plural: bool = False) -> str:
    names = []
    for alt in _alternatives(annotation):
        if typing.get_origin(alt) is list:
            names.append("a list of " + _type_name(typing.get_args(alt)[0], plural=True))
        else:
            names.append(_TYPE_NAMES.get(typing.get_origin(alt) or alt, (str(alt), str(alt)))[plural])
    return " or ".join(names)


def _convert(value, annotation):
    """`value` as the annotated type (an int from an integral float: 1e3 -> 1000); TypeError if it is not one."""
    for alt in _alternatives(annotation):
        origin = typing.get_origin(alt) or alt
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (alt is type(None) and value is None) or (alt in (bool, str) and isinstance(value, alt)):
            return value
        if alt is int and number and (isinstance(value, int) or value.is_integer()):
            return int(value)
        if alt is float and number and math.isfinite(value):  # NaN slips through every `x <= 0` check
            return value
        if origin is dict and isinstance(value, dict):
            return value
        if origin is list and isinstance(value, list):
            try:
                return [_convert(v, typing.get_args(alt)[0]) for v in value]
            except TypeError:
                continue
        if origin not in (int, float, bool, str, dict, list, type(None)):
            return value  # a type not checked here
    raise TypeError


def check_value(section: str, key: str, value, annotation):
    """`value` converted to its field's type and inside BOUNDS, or a ValueError naming section.key and value."""
    try:
        value = _convert(value, annotation)
    except TypeError:
        raise ValueError(f"{section}.{key} must be {_type_name(annotation)}, got {value!r}") from None
    low, high = BOUNDS.get(f"{section}.{key}", (None, None))
    for v in value if isinstance(value, list) else [value]:
        if v is not None and ((low is not None and v < low) or (high is not None and v > high)):
            allowed = f"≥ {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{section}.{key} must be {allowed}, got {value!r}")
    return value


def read_params(path: str | Path = "params.yaml") -> dict:
    """The params file as a dict of sections; a missing or malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} does not exist: run from the project folder (where params.yaml "
                                "is) or pass --params FILE")
    try:
        params = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"params file {path} is not readable YAML: {err}") from None
    bad = [s for s, v in params.items() if not isinstance(v, dict | None)] if isinstance(params, dict) else None
    if bad is None or bad:
        raise ValueError(f"params file {path} must map section names to mappings of keys"
                         + (f"; section(s) {bad} are not" if bad else ""))
    return params


def _check_keys(cls, keys, section: str) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in params section {section!r}; allowed: {sorted(allowed)}")


def build(cls, values: dict, section: str):
    """Instantiate a config dataclass, naming any unknown key, or a value of the wrong type or out of BOUNDS."""
    _check_keys(cls, values, section)
    annotations = typing.get_type_hints(cls)
    return cls(**{k: check_value(section, k, v, annotations[k]) for k, v in values.items()})


def parse_overrides(overrides: list[str]) -> dict[str, dict]:
    """['generate.rho=0.5', 'data.dataset=imdb'] -> {'generate': {'rho': 0.5}, 'data': {'dataset': 'imdb'}}: each
    value read as its field's type and checked, whichever sections the command reads."""
    classes = section_classes()
    out: dict[str, dict] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. generate.rho=0.5)")
        if section not in classes:
            raise ValueError(f"override {item!r}: unknown params section {section!r}; known: {sorted(classes)}")
        _check_keys(classes[section], [name], section)
        annotation = typing.get_type_hints(classes[section])[name]
        try:
            value = parse_value(raw, annotation)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: {raw!r} is not a readable value ({err.problem})") from None
        out.setdefault(section, {})[name] = check_value(section, name, value, annotation)
    return out


def parse_value(raw: str, annotation=None):
    """A --set value as its field's type wants it. A string field keeps the text as typed ('{text} It was: {label}'
    is no YAML mapping), unquoting a JSON string ("review", as json.dumps writes overrides), and null where the
    field allows it. Other fields: JSON first (so 1e-4 is a number: YAML 1.1 reads it as a string), then YAML
    (bare words, [a, b]); a bool field takes only true/false (YAML 1.1 would also read yes/no/on/off)."""
    alternatives = _alternatives(annotation)
    if str in alternatives or bool in alternatives:
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return value if isinstance(value, tuple(t for t in (str, bool, type(None)) if t in alternatives)) else raw
    try:
        return json.loads(raw)
    except ValueError:
        return load_yaml(raw)


def load_config(cls, section: str, params_path: str | Path = "params.yaml", overrides: list[str] = ()):
    """The dataclass for one params.yaml section, with command-line overrides applied on top."""
    params = read_params(params_path)
    known = set(section_classes()) | {"variants"}  # variants: GRADMM variants' settings (registry.variant_settings)
    unknown = sorted(set(params) - known)
    if unknown:  # a misspelt section would leave its stage on the defaults
        raise ValueError(f"params file {params_path}: unknown section(s) {unknown}; known: {sorted(known)}")
    values = dict(params.get(section) or {})
    values.update(parse_overrides(list(overrides)).get(section, {}))
    return build(cls, values, section)


def as_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*cfgs) -> str:
    """A short stable hash of configs: names a run directory's params and guards resume."""
    blob = json.dumps([as_dict(c) for c in cfgs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def apply_profile(profile_path: str | Path, params_path: str | Path = "params.yaml", settings_of=None) -> list[str]:
    """Merge a profile's sections into params.yaml in place, keeping its comments; returns the changed keys.
    `settings_of(generator)` (registry.variant_settings) fills the `variants` entries of generators it adds.

    ruamel.yaml (a DVC dependency) round-trips the file so the commented params stay readable.
    """
    from ruamel.yaml import YAML

    profile_path, params_path = Path(profile_path), Path(params_path)
    if not profile_path.is_file():
        names = sorted(p.stem for p in profile_path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"profile {profile_path.stem!r} not found in {profile_path.parent}: use one of {names}")
    rt = YAML()
    params = rt.load(params_path.read_text())
    profile = load_yaml(profile_path.read_text()) or {}
    changed = []
    for section, values in profile.items():
        if section not in params:
            raise ValueError(f"profile {profile_path.name} has section {section!r}, params.yaml does not")
        for key, value in values.items():
            if key not in params[section]:
                raise ValueError(f"profile {profile_path.name}: unknown key {section}.{key}")
            if params[section][key] != value:
                params[section][key] = value
                changed.append(f"{section}.{key}")
    if "variants" in params and settings_of:  # DVC's generate stages track each generator's entry: add new ones
        for generator in (params.get("experiment") or {}).get("generators") or []:
            if generator not in params["variants"]:
                params["variants"][generator] = settings_of(generator)
                changed.append(f"variants.{generator}")
    with params_path.open("w") as f:
        rt.dump(params, f)
    return changed
