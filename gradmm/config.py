"""trl-style configs: one dataclass per params.yaml section, overridable with `section.key=value`."""

import dataclasses
import hashlib
import json
import re
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


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        return {}
    return load_yaml(path.read_text()) or {}


def build(cls, values: dict, section: str):
    """Instantiate a config dataclass, naming any unknown key and the allowed ones."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in params section {section!r}; allowed: {sorted(allowed)}")
    return cls(**values)


def parse_overrides(overrides: list[str]) -> dict[str, dict]:
    """['generate.rho=0.5', 'data.dataset=imdb'] -> {'generate': {'rho': 0.5}, 'data': {'dataset': 'imdb'}}."""
    out: dict[str, dict] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. generate.rho=0.5)")
        out.setdefault(section, {})[name] = parse_value(raw)
    return out


def parse_value(raw: str):
    """JSON first (so 1e-4 is a number: YAML 1.1 reads it as a string), then YAML (bare words, [a, b])."""
    try:
        return json.loads(raw)
    except ValueError:
        return load_yaml(raw)


def load_config(cls, section: str, params_path: str | Path = "params.yaml", overrides: list[str] = ()):
    """The dataclass for one params.yaml section, with command-line overrides applied on top."""
    values = dict(read_params(params_path).get(section) or {})
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
