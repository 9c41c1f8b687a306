"""trl-style configs: one dataclass per params.yaml section, overridable with `section.key=value`."""

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
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


def section_classes() -> dict:
    """The config dataclass of each params.yaml section (imported here, not at the top: they import config)."""
    from gradmm.core.admm import GenerateConfig
    from gradmm.experiments.privacy import PrivacyConfig
    from gradmm.core.data import DataConfig
    from gradmm.methods.trainsets import ExperimentConfig
    from gradmm.methods.filtering import FilterConfig
    from gradmm.methods.finetune import FinetuneConfig
    from gradmm.methods.generate import DPConfig
    from gradmm.core.models import ModelConfig
    from gradmm.experiments.variants import StudyConfig
    from gradmm.experiments.transfer import TransferConfig

    return {"data": DataConfig, "model": ModelConfig, "generate": GenerateConfig, "dp": DPConfig,
            "filter": FilterConfig, "finetune": FinetuneConfig, "experiment": ExperimentConfig, "study": StudyConfig,
            "privacy": PrivacyConfig, "transfer": TransferConfig}


# Inclusive (low, high) bounds of the numeric params that their stage's own check (admm.check_config,
# finetune.check_config, ...) does not cover; `build` applies them to a value or to each element of a list.
BOUNDS = {
    "data.split_seed": (0, None),
    "generate.seq_len": (0, None),  # 0 = the real prompts' mean length
    "generate.max_seq_len": (1, None),
    "generate.init_norm": (0, None),  # 0 = the model's median embedding norm
    "generate.matching_weight": (0, None),
    "generate.stop_changed_fraction": (0, 1),
    "generate.seed": (0, None),
    "dp.noise_seed_not_private": (0, None),
    "filter.alpha": (0, None),
    "filter.seed": (0, None),
    "experiment.seeds": (0, None),
    "experiment.llm_raw_per_class": (1, None),
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
    unknown = sorted(set(params) - set(section_classes()))
    if unknown:  # a misspelt section would leave its stage on the defaults
        raise ValueError(f"params file {params_path}: unknown section(s) {unknown}; known: {sorted(section_classes())}")
    values = dict(params.get(section) or {})
    values.update(parse_overrides(list(overrides)).get(section, {}))
    return build(cls, values, section)


def as_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*cfgs) -> str:
    """A short stable hash of configs: names a run directory's params and guards resume."""
    blob = json.dumps([as_dict(c) for c in cfgs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def apply_profile(profile_path: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    """Merge a profile's sections into params.yaml in place, keeping its comments; returns the changed keys.

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
    with params_path.open("w") as f:
        rt.dump(params, f)
    return changed
