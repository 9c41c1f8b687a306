"""Privacy attacks on the tiny model: membership inference, canaries and the DP sweep run, resume and refuse bad input."""

import json
import math

import pytest
import yaml

from gradmm.cli import main
from gradmm.config import PrivacyConfig
from gradmm.experiments.privacy import canaried_task, check_privacy
from gradmm.reporting.privacy import attack_tables, dp_sweep_summary, write_attack_report
from tests.test_study import PARAMS, _study, project  # noqa: F401 (the fixture)

PRIVACY = {"datasets": ["toy"], "n_per_class": 2, "methods": ["random_real", "gradmm"], "members": 8, "canaries": 2,
           "canary_alternatives": 15, "epsilons": [1.0], "dp_seeds": [0], "attack_lr": 1.0e-3}


def _attacks(project, *extra):
    return main(["privacy-attacks", "--params", str(project / "params.yaml"), "--task", str(project / "task"),
                 "--study", str(project / "study"), "--out", str(project / "privacy" / "toy"), *extra])


@pytest.fixture
def attacked(project):  # noqa: F811
    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "privacy": PRIVACY}))
    assert _study(project, "random_real") == 0 and _study(project, "gradmm") == 0
    assert _attacks(project) == 0
    return project


def test_membership_canaries_and_the_dp_sweep(attacked):
    out = attacked / "privacy" / "toy"
    member = json.loads((out / "membership.json").read_text())["rows"]
    assert {(r["method"], r["attack"]) for r in member} == {(m, a) for m in ("full_real", "random_real", "gradmm")
                                                           for a in ("loss", "reference")}
    assert all(0 <= r["auc"] <= 1 and r["members"] == 8 for r in member)
    assert [r["n_train"] for r in member if r["method"] == "full_real"][0] == 20  # the whole pool
    canary = json.loads((out / "canaries" / "exposure.json").read_text())
    assert canary["pool_size"] == 22 and canary["canaries"] == 2
    assert {e["model"] for e in canary["exposures"]} == {"base", "finetuned_on_synthetic", "finetuned_on_canaried_pool"}
    assert all(0 <= e["exposure"] <= math.log2(16) + 1e-9 for e in canary["exposures"])
    tables = attack_tables(attacked / "privacy", attacked / "study")
    summ = dp_sweep_summary(tables["dp_sweep"])
    assert summ.epsilon.tolist() == [math.inf, 1.0]  # ∞ = the study's gradmm cell
    assert math.isinf(summ.snr.iloc[0]) and 0 < summ.snr.iloc[1] < math.inf  # DP noise: a finite SNR
    from gradmm.core.data import task_from_dir

    report = write_attack_report(tables, {"toy": task_from_dir(attacked / "task")}, attacked / "reports")
    assert set(report) == {"membership", "canaries", "dp_sweep"}
    assert {"accuracy_mean", "snr", "ngram4_synthetic", "nn_sim_mean_synthetic"} <= set(report["dp_sweep"].columns)
    assert (attacked / "reports" / "figures" / "dp_sweep.png").stat().st_size > 1000
    assert (attacked / "reports" / "tables" / "canaries.csv").read_text().count("\n") == 4  # header + 3 models
    stamp = (out / "membership.json").stat().st_mtime_ns
    assert _attacks(attacked) == 0  # resumed: nothing redone
    assert (out / "membership.json").stat().st_mtime_ns == stamp
    assert _attacks(attacked, "--set", 'privacy.methods=["gradmm"]') == 0  # other settings: that part is redone
    assert [r["method"] for r in json.loads((out / "membership.json").read_text())["rows"]][::2] == ["full_real", "gradmm"]
    assert (out / "canaries" / "exposure.json").stat().st_mtime_ns < (out / "membership.json").stat().st_mtime_ns


def test_canaries_join_the_pool_with_every_class(project):  # noqa: F811
    from gradmm.core.data import task_from_dir

    task = task_from_dir(project / "task")
    ctask, canaries = canaried_task(task, PrivacyConfig(canaries=3, canary_repeats=2))
    assert len(ctask.pool) == len(task.pool) + 6 and len(task.pool) == 20  # the original is untouched
    assert [ex.label for ex in ctask.pool[-6:]] == [0, 0, 1, 1, 0, 0]
    assert all(c.secret in ex.text for c, ex in zip(canaries, ctask.pool[-6::2]))


def test_bad_privacy_input_fails_before_any_work(project, capsys):  # noqa: F811
    with pytest.raises(ValueError, match="privacy.methods \\['zero_shot'\\]"):
        check_privacy(PrivacyConfig(methods=["zero_shot"]))
    with pytest.raises(ValueError, match="canary_method 'gradmm_dp'"):
        check_privacy(PrivacyConfig(canary_method="gradmm_dp"))
    with pytest.raises(ValueError, match="epsilons"):
        check_privacy(PrivacyConfig(epsilons=[math.inf]))
    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "privacy": PRIVACY}))
    assert _attacks(project) == 2  # the study's training sets are missing
    assert "run `gradmm study` first" in capsys.readouterr().err
    assert not (project / "privacy").exists()
