"""A GRADMM variant's settings live in params.yaml's `variants` section for the pipeline's generators: the
generate and filter commands apply that entry, DVC's generate and filter stages track it, so editing one
variant's settings makes exactly its stages stale; without an entry the registry's definition applies."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gradmm.config import GenerateConfig, apply_profile, load_config, read_params
from gradmm.methods.registry import GENERATORS, variant_overrides, variant_settings

ROOT = Path(__file__).resolve().parent.parent
DVC = Path(sys.executable).parent / "dvc"


def test_a_params_entry_wins_over_the_registry_and_a_missing_one_falls_back():
    params = {"variants": {"gradmm_plus": {"generate": {"center": False, "rho": 0.5}}}}
    assert variant_overrides("gradmm_plus", params) == ["generate.center=false", "generate.rho=0.5"]
    assert variant_settings("gradmm_dp", params) == GENERATORS["gradmm_dp"]
    assert variant_overrides("gradmm_plus") == ["generate.center=true"]


@pytest.mark.parametrize("variants, message", [
    ({"gradmm_magic": {}}, r"\['gradmm_magic'\] are not GRADMM variants"),
    ({"gradmm_plus": {"finetune": {"steps": 3}}}, r"variants.gradmm_plus must map some of the sections"),
    ({"gradmm_plus": {"generate": 3}}, r"variants.gradmm_plus must map"),
])
def test_bad_variant_settings_are_named(variants, message):
    with pytest.raises(ValueError, match=message):
        variant_settings("gradmm_plus", {"variants": variants})


def test_the_generate_command_applies_the_params_entry(tmp_path, capsys):
    """`gradmm generate --variant gradmm_plus` reads params.yaml's entry; a misspelt key there is named."""
    from gradmm.cli import main

    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    params.write_text(text.replace("generate: {center: true}", "generate: {center: true, rho: 0.7}"))
    overrides = variant_overrides("gradmm_plus", read_params(params))
    cfg = load_config(GenerateConfig, "generate", params, overrides)
    assert cfg.center and cfg.rho == 0.7
    params.write_text(text.replace("generate: {center: true}", "generate: {centre: true}"))
    code = main(["generate", "--params", str(params), "--task", str(tmp_path / "no-task"), "--variant", "gradmm_plus",
                 "--out", str(tmp_path / "out")])
    assert code != 0 and "unknown key(s) ['centre'] in params section 'generate'" in capsys.readouterr().err


def test_the_committed_pipeline_runs_the_registrys_variants():
    """params.yaml has an entry for each generator the pipeline runs (DVC needs it), equal to the definition
    docs/method.md describes: the committed results are those variants'."""
    params = read_params(ROOT / "params.yaml")
    for generator in params["experiment"]["generators"]:
        assert variant_settings(generator, params) == GENERATORS[generator], generator


def test_a_profile_adds_the_entries_of_its_generators(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    changed = apply_profile(ROOT / "profiles" / "full.yaml", params, variant_settings)
    merged = read_params(params)
    assert "variants.gradmm_dp" in changed
    for generator in merged["experiment"]["generators"]:
        assert merged["variants"][generator] == GENERATORS[generator]


def _params_changes(project: Path) -> dict:
    out = subprocess.run([str(DVC), "status", "--json"], cwd=project, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return {stage: change["changed deps"]["params.yaml"] for stage, changes in yaml.safe_load(out.stdout).items()
            for change in changes if isinstance(change, dict) and "params.yaml" in (change.get("changed deps") or {})}


def test_editing_one_variant_makes_only_its_stages_stale(tmp_path):
    """In a copy of the pipeline's definition and lock, editing gradmm_plus's settings changes the `dvc status` of
    its generate and filter stages and of no other stage."""
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(DVC), "init", "-q"], cwd=tmp_path, check=True)
    before = _params_changes(tmp_path)
    params = (tmp_path / "params.yaml").read_text()
    assert "generate: {center: true}" in params
    (tmp_path / "params.yaml").write_text(params.replace("generate: {center: true}", "generate: {center: true, rho: 0.5}"))
    after = _params_changes(tmp_path)
    changed = {stage for stage in set(before) | set(after) if before.get(stage) != after.get(stage)}
    assert changed == {"generate@tweets-gradmm_plus-0", "generate@rtpolarity-gradmm_plus-0",
                       "filter@tweets-gradmm_plus-5-0", "filter@rtpolarity-gradmm_plus-5-0"}
    assert after["generate@tweets-gradmm_plus-0"]["variants.gradmm_plus"] == "modified"
