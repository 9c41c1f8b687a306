"""gradmm.experiments.text_stats and notebooks/02_privacy_perplexity.ipynb on a tiny fake study (tiny-random model, MiniLM)."""

import math
from pathlib import Path

import pandas as pd
import pytest

from gradmm.core.data import TEMPLATES, Task, task_from_dir, write_task
from gradmm.experiments import text_stats as textstats
from gradmm.io.records import write_jsonl
from gradmm.reporting import text_stats as text_report
from tests.conftest import toy_examples

ROOT = Path(__file__).resolve().parent.parent
DISJOINT = ["zany purple quokkas juggle seven lanterns", "quiet violet herons sketch distant glaciers",
            "eleven copper robots knit woolly scarves", "sleepy orange walruses hum ancient lullabies"]


def fake_study(root: Path) -> Task:
    """root/runs/toy/data (a prepared task) and root/studies/variants/toy/<method>/ training sets at n = 2 per class."""
    rows = toy_examples(30)
    write_task(Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:40], rows[40:60]),
               root / "runs" / "toy" / "data")
    task = task_from_dir(root / "runs" / "toy" / "data")
    cells = root / "studies" / "variants" / "toy"
    copy = [{"text": ex.text, "label": ex.label} for ex in task.pool[:4]]
    write_jsonl(cells / "gradmm" / "trainset-n2-g0.jsonl", copy)  # verbatim pool texts: total leakage
    write_jsonl(cells / "gradmm" / "trainset-n5-g0.jsonl", copy * 2)  # another budget: not picked
    write_jsonl(cells / "llm_zero_shot_gen" / "trainset-n2-g0.jsonl",
                [{"text": t, "label": i % 2, "source": "lm"} for i, t in enumerate(DISJOINT)])
    write_jsonl(cells / "random_real" / "trainset-n2-s0.jsonl", copy[::-1])
    write_jsonl(cells / "zero_shot" / "trainset-n2-g0.jsonl", [])  # no texts: skipped
    (cells / "herding").mkdir()  # a cell without its training set yet: skipped
    return task


@pytest.fixture
def study(tmp_path):
    return tmp_path, fake_study(tmp_path)


def test_training_sets_finds_the_files_and_skips_missing_ones(study):
    root, _ = study
    sets = textstats.training_sets(root / "studies" / "variants", "toy", 2)
    assert list(sets) == ["random_real", "llm_zero_shot_gen", "gradmm"]  # the report's method order
    assert len(sets["gradmm"]) == 4 and sets["llm_zero_shot_gen"][0]["text"] == DISJOINT[0]
    only = textstats.training_sets(root / "studies" / "variants", "toy", 2, methods=["gradmm", "herding", "kcenter"])
    assert list(only) == ["gradmm"]
    assert list(textstats.training_sets(root / "studies" / "variants", "toy", 5)) == ["gradmm"]
    with pytest.raises(FileNotFoundError, match="toy"):
        textstats.training_sets(root / "studies" / "variants", "toy", 2, seed=1, methods=["random_real"])
    with pytest.raises(FileNotFoundError, match="nothere"):
        textstats.training_sets(root / "studies" / "variants", "nothere", 2)


def test_leakage_of_a_pool_copy_is_total_and_of_new_words_none(study):
    root, task = study
    sets = textstats.training_sets(root / "studies" / "variants", "toy", 2)
    rows = {r["method"]: r for r in textstats.leakage_rows(task, sets, seed=0)}
    copy, new = rows["gradmm"], rows["llm_zero_shot_gen"]
    assert copy["exact_match_synthetic"] == 1.0 and copy["ngram8_synthetic"] == 1.0
    assert new["exact_match_synthetic"] == 0.0 and new["ngram4_synthetic"] == 0.0
    assert copy["holdout_size"] == 4 and copy["exact_match_holdout"] == new["exact_match_holdout"]  # same seed
    assert copy["nn_sim_mean_synthetic"] == pytest.approx(1.0, abs=1e-5)
    assert new["nn_sim_mean_synthetic"] < copy["nn_sim_mean_synthetic"]
    assert new["nn_sim_p95_synthetic"] >= new["nn_sim_mean_synthetic"] - 1e-9
    assert textstats.leakage_rows(task, sets, holdout_size=100)[0]["holdout_size"] == len(task.dev)


def test_perplexity_rows_one_finite_value_per_text(study, tiny):
    root, task = study
    model, tok = tiny
    sets = textstats.training_sets(root / "studies" / "variants", "toy", 2)
    rows = textstats.perplexity_rows(model, tok, task, sets, "tiny-random", conditioned=True, progress=False)
    df = pd.DataFrame(rows)
    assert len(df) == len(task.pool) + len(task.dev) + sum(map(len, sets.values()))
    assert df.groupby("method").size().to_dict() == {"real_pool": 20, "real_holdout": 20, "random_real": 4,
                                                     "llm_zero_shot_gen": 4, "gradmm": 4}
    assert df[["log_perplexity", "log_perplexity_conditioned"]].map(math.isfinite).all().all()
    assert (df["model"] == "tiny-random").all() and (df["n_tokens"] > 0).all()
    assert not (df["log_perplexity"] == df["log_perplexity_conditioned"]).all()  # the prefix matters
    # the batching (sorted by length, right-padded) does not change a text's value
    small = Task(task.name, task.class_names, task.template, task.pool[:3], task.dev[:3], [])
    lm_only = {"llm_zero_shot_gen": sets["llm_zero_shot_gen"]}
    one, many = (pd.DataFrame(textstats.perplexity_rows(model, tok, small, lm_only, "tiny-random", batch_size=b,
                                                        progress=False)) for b in (1, 16))
    assert one["log_perplexity"].to_numpy() == pytest.approx(many["log_perplexity"].to_numpy(), abs=1e-4)
    assert "log_perplexity_conditioned" not in textstats.perplexity_rows(model, tok, task, {}, "t", progress=False)[0]
    summ = text_report.perplexity_summary(df)
    assert len(summ) == 5
    assert {"n", "logppl_mean", "logppl_median", "logppl_std", "logppl_conditioned_mean"} <= set(summ)


def test_diversity_of_identical_texts_is_low():
    same = [{"text": "a dull, boring mess", "label": 0}] * 4
    varied = [{"text": t, "label": 0} for t in DISJOINT]
    rows = {r["method"]: r for r in textstats.diversity_rows({"same": same, "varied": varied}, "toy")}
    assert rows["same"]["distinct_1"] == pytest.approx(0.25) and rows["same"]["self_bleu"] > 0.9
    assert rows["varied"]["distinct_2"] == 1.0 and rows["varied"]["self_bleu"] < 0.1
    assert rows["same"]["dataset"] == "toy"
    assert math.isnan(textstats.diversity_rows({"one": same[:1]})[0]["self_bleu"])


def test_write_text_report_writes_tables_and_figures(tmp_path):
    ppl = [{"dataset": "toy", "method": m, "label": i % 2, "model": "tiny-random", "n_tokens": 5,
            "log_perplexity": 3.0 + i, "log_perplexity_conditioned": 2.5 + i}
           for m in ("real_pool", "gradmm") for i in range(4)]
    leak = [{"dataset": "toy", "method": "gradmm", "n_texts": 4, "holdout_size": 4, "exact_match_synthetic": 1.0,
             "exact_match_holdout": 0.0, "ngram4_synthetic": 1.0, "ngram4_holdout": 0.5, "ngram8_synthetic": 1.0,
             "ngram8_holdout": 0.1, "nn_sim_mean_synthetic": 1.0, "nn_sim_p95_synthetic": 1.0,
             "nn_sim_mean_holdout": 0.6, "nn_sim_p95_holdout": 0.7}]
    div = [{"dataset": "toy", "method": "gradmm", "distinct_1": 0.5, "distinct_2": 0.6, "self_bleu": 0.3}]
    tables = text_report.write_text_report(ppl, leak, div, tmp_path / "reports")
    for name in ("tables/perplexity.csv", "tables/perplexity_texts.csv", "tables/privacy.csv",
                 "figures/perplexity.png", "figures/privacy.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0, name
    privacy = pd.read_csv(tmp_path / "reports" / "tables" / "privacy.csv")
    assert len(privacy) == 1 and privacy.loc[0, "self_bleu"] == 0.3 and privacy.loc[0, "ngram8_holdout"] == 0.1
    assert list(tables["perplexity"]["method"]) == ["real_pool", "gradmm"]
    assert tables["perplexity"]["logppl_mean"].tolist() == [4.5, 4.5]


@pytest.mark.e2e
def test_privacy_notebook_runs_on_a_fake_study(tmp_path):
    """The committed notebook, executed with papermill in a throw-away project on the tiny-random model."""
    import papermill as pm

    fake_study(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")  # marks tmp_path as the project root the notebook moves to
    pm.execute_notebook(ROOT / "notebooks" / "02_privacy_perplexity.ipynb", tmp_path / "executed.ipynb",
                        cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                        parameters={"datasets": ["toy"], "n_per_class": 2, "model": "tiny-random",
                                    "second_model": "tiny-random-untied", "progress": False})
    perplexity = pd.read_csv(tmp_path / "reports" / "tables" / "perplexity.csv")
    assert sorted(set(perplexity["model"])) == ["tiny-random", "tiny-random-untied"]
    assert len(perplexity) == 2 * 5  # 2 models × (real_pool, real_holdout, random_real, llm_zero_shot_gen, gradmm)
    privacy = pd.read_csv(tmp_path / "reports" / "tables" / "privacy.csv")
    assert privacy["method"].tolist() == ["random_real", "llm_zero_shot_gen", "gradmm"]
    assert (tmp_path / "reports" / "figures" / "privacy.png").stat().st_size > 0
