"""Every profile under profiles/ merges into params.yaml and gives settings that pass each section's checks."""

import shutil
from pathlib import Path

import pytest

from gradmm.config import apply_profile, load_config

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_merges_into_valid_settings(profile, tmp_path):
    from gradmm.config import ExperimentConfig, FinetuneConfig, GenerateConfig, ModelConfig, StudyConfig
    from gradmm.core.admm import check_config as check_generate
    from gradmm.core.models import check_model_name
    from gradmm.experiments.transfer import settings
    from gradmm.experiments.variants import check_study
    from gradmm.methods.finetune import check_config as check_finetune
    from gradmm.methods.trainsets import check_experiment

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert apply_profile(profile, params), f"{profile.name} changes nothing"
    check_model_name(load_config(ModelConfig, "model", params).name)
    check_generate(load_config(GenerateConfig, "generate", params))
    check_finetune(load_config(FinetuneConfig, "finetune", params))
    check_experiment(load_config(ExperimentConfig, "experiment", params))
    check_study(load_config(StudyConfig, "study", params))
    settings(params)  # the transfer section, with its finetune overrides


def test_the_paper_profile_names_the_papers_transfer_targets(tmp_path):
    from gradmm.experiments.transfer import settings

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_profile(ROOT / "profiles" / "paper.yaml", params)
    cfg = settings(params)[0]
    assert {"meta-llama/Llama-3.2-1B", "facebook/opt-1.3b"} <= set(cfg.targets)
    assert cfg.datasets == ["sst2", "rotten_tomatoes"]


def test_an_unknown_profile_key_is_named(tmp_path):
    params, bad = tmp_path / "params.yaml", tmp_path / "bad.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    bad.write_text("generate:\n  outer_stpes: 3\n")
    with pytest.raises(ValueError, match="generate.outer_stpes"):
        apply_profile(bad, params)


def test_the_paper_faithful_profile_sets_the_authors_sizes_and_calibration(tmp_path):
    from gradmm.config import DataConfig, DPConfig, GenerateConfig, StudyConfig

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    changed = apply_profile(ROOT / "profiles" / "paper_faithful.yaml", params)
    assert {"data.pool_per_class", "generate.n_per_class", "dp.mechanism"} <= set(changed)
    assert load_config(DataConfig, "data", params).pool_per_class == 25  # 50 real examples in all
    assert load_config(GenerateConfig, "generate", params).n_per_class == 100  # 200 raw texts in all
    assert load_config(DPConfig, "dp", params).mechanism == "official"
    assert load_config(StudyConfig, "study", params).raw_per_class == 100
    assert load_config(GenerateConfig, "generate", params).template == "paper_generation"


def test_the_authors_generation_template_matches_great_after_a_separate_space():
    from gradmm.config import GenerateConfig
    from gradmm.core.data import TEMPLATES, Task
    from gradmm.core.models import load_tokenizer
    from gradmm.core.scoring import first_label_ids
    from gradmm.methods.generate import matching_task

    tok = load_tokenizer("tiny-random")  # the SmolLM2 tokenizer
    task = matching_task(Task("toy", ["negative", "positive"], TEMPLATES["paper"], [], [], []),
                         GenerateConfig(template="paper_generation"))
    assert tok.convert_ids_to_tokens(tok(task.template.suffix, add_special_tokens=False).input_ids) == ["ĠIt", "Ġwas", "Ġ"]
    ours, theirs = first_label_ids(tok, TEMPLATES["paper"]), first_label_ids(tok, task.template)
    assert tok.convert_ids_to_tokens(theirs) == ["bad", "great"] and ours != theirs
