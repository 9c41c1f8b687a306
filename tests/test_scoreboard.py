"""The quality scoreboard: settings pooled across study folders, the strictest bars, the dev pick and its verdict."""

import json

import pytest

from gradmm.cli import main
from gradmm.reporting.scoreboard import scoreboard, settings, write_scoreboard


def cell(root, study, dataset, method, test, dev=None, config=None, sets=3, seeds=2):
    """A study cell of sets × seeds results at n = 20, every run at `test` (± 0.01 by seed) and `dev`."""
    folder = root / study / dataset / method
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(json.dumps({"method": method, "task": {"name": dataset},
                                                        **(config or {})}))
    for g in range(sets):
        for s in range(seeds):
            (folder / f"result-n20-g{g}-s{s}.json").write_text(json.dumps({
                "dataset": dataset, "model": "m", "method": method, "n_per_class": 20, "generation_seed": g,
                "seed": s, "test_accuracy": test + (0.01 if s else -0.01), "dev_accuracy": test if dev is None else dev,
                "test_prediction_shares": [0.5, 0.5], "n_train": 40}))
    return root / study


@pytest.fixture
def studies(tmp_path):
    for d, lm, real in (("rtpolarity", 0.76, 0.83), ("tweets", 0.76, 0.80), ("imdb", 0.88, 0.90)):
        cell(tmp_path, "base", d, "llm_zero_shot_gen", lm)
        cell(tmp_path, "base", d, "random_real", real)
    cell(tmp_path, "topup", "rtpolarity", "llm_zero_shot_gen", 0.79, config={"topped": True})  # a stricter LM bar
    for d, test in (("rtpolarity", 0.85), ("tweets", 0.80)):
        cell(tmp_path, "chosen", d, "gradmm_x", test, dev=0.84)
        cell(tmp_path, "other", d, "gradmm_y", 0.90, dev=0.70)  # better on test, worse on dev: not the pick
    cell(tmp_path, "held-out", "imdb", "gradmm_x", 0.89)  # the same setting, in a study of its own
    return [tmp_path / s for s in ("base", "topup", "chosen", "other", "held-out")]


def test_the_pick_is_chosen_on_dev_and_judged_against_the_strictest_bars(studies):
    df = settings(studies)
    assert set(df[df.method == "gradmm_x"].setting) == {"chosen@gradmm_x"}  # imdb's cell joins its setting
    table, verdict = scoreboard(df)
    assert verdict["bars"]["rtpolarity"]["lm"] == ("topup@llm_zero_shot_gen", pytest.approx(0.79))
    assert verdict["pick"] == "chosen@gradmm_x"
    # rtpolarity: 0.85 is LM + 6 and real + 2; tweets: LM + 4 only; imdb: above the LM's own text
    assert verdict["pick_goal"] == {"rtpolarity": True, "tweets": False, "imdb": True}
    row = table[(table.setting == "chosen@gradmm_x") & (table.dataset == "rtpolarity")].iloc[0]
    assert row.gain_vs_lm == pytest.approx(0.06) and row.sets == 3 and row.runs == 6
    assert table[table.setting == "other@gradmm_y"].goal_met.tolist() == [True, True]  # met, but not picked


def test_the_command_writes_both_tables_and_refuses_a_missing_folder(studies, tmp_path, capsys):
    out = tmp_path / "reports" / "scoreboard"
    assert main(["quality-scoreboard", *map(str, studies), "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "**Dev pick: chosen@gradmm_x**" in md and "tweets: no" in md
    assert "| chosen@gradmm_x | 84.0 | 85.0 (+6.0 / +2.0) ✓ |" in md
    assert out.with_suffix(".csv").is_file()
    assert main(["quality-scoreboard", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no study folder" in capsys.readouterr().err
    table, _ = write_scoreboard(studies[:2], tmp_path / "baselines-only")
    assert set(table.method) == {"llm_zero_shot_gen", "random_real"}  # no candidate: no pick, no failure
