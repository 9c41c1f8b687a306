"""environment.yml (conda) must pin exactly what the pip requirements pin."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(line.lower().split("==") for line in pip_section)
    assert conda_pins == _pins(ROOT / "requirements.txt")


def test_every_requirement_is_pinned():
    for name in ("requirements.txt", "requirements-nodeps.txt", "requirements-gemma.txt"):
        assert _pins(ROOT / name)
