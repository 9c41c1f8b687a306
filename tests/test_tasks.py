"""Tasks beyond binary sentiment: a 5-class topic dataset of our own through the local loader.

The task is a described thing (domain, description, label words, template, truncation); an empty class must
lead to a flagged result, never to the untouched model's accuracy reported as the method's.
"""

import json

import pandas as pd
import pytest

from gradmm.cli import build_parser
from gradmm.config import DataConfig, DPConfig, FilterConfig, FinetuneConfig, GenerateConfig, ModelConfig
from gradmm.core.data import TEMPLATES, load_task, task_from_dir, write_task
from gradmm.core.matching import hidden_and_logits
from gradmm.core.scoring import first_label_ids, template_prompt
from gradmm.methods.filtering import filter_rows
from gradmm.methods.finetune import finetune_and_evaluate, label_logits
from gradmm.methods.generate import generate
from gradmm.methods.prompts import instruction
from gradmm.methods.trainsets import evaluate_method
from gradmm.reporting import classification as report
from tests.conftest import toy_examples

TOPICS = ["world", "sports", "business", "science", "health"]
WORDS = {"world": "election summit treaty", "sports": "match goal league", "business": "shares market profit",
         "science": "telescope genome physics", "health": "vaccine clinic diet"}
FT = FinetuneConfig(learning_rates=[1e-3], steps=2, batch_size=4)


def write_topics(path, n_per_class: int = 10):
    """A small 5-class news-topic jsonl, labels given by name."""
    rows = [{"headline": f"{WORDS[t]} report number {i}", "topic": t} for i in range(n_per_class) for t in TOPICS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def topic_cfg(path, **kw) -> DataConfig:
    return DataConfig(**{"dataset": "local", "source": str(path), "text_field": "headline", "label_field": "topic",
                         "label_names": TOPICS, "template": "{text}\nTopic:", "label_words": [f" {t}" for t in TOPICS],
                         "pool_per_class": 4, "dev_per_class": 2, "test_per_class": 2, **kw})


@pytest.fixture
def topics(tmp_path):
    return load_task(topic_cfg(write_topics(tmp_path / "news.jsonl"), domain="news headline",
                               description="about {label}"))


def test_the_generation_instruction_uses_the_task_description(topics, tmp_path):
    assert instruction(topics, 1) == "Write one short news headline about sports. Reply with the news headline only."
    assert instruction(topics, 3, [topics.pool[0]]).startswith("Here are some news headlines about science:\n- ")
    plain = load_task(topic_cfg(write_topics(tmp_path / "plain.jsonl")))  # no description: neutral, not "sentiment"
    assert instruction(plain, 2) == 'Write one short text in the category "business". Reply with the text only.'
    write_task(topics, tmp_path / "prepared")  # `gradmm prepare` keeps the task's description and truncation
    again = task_from_dir(tmp_path / "prepared")
    assert instruction(again, 1) == instruction(topics, 1) and again.max_text_tokens == topics.max_text_tokens
    with pytest.raises(ValueError, match=r"must hold \{label\}"):
        load_task(topic_cfg(tmp_path / "plain.jsonl", description="about sports"))


def test_the_sentiment_datasets_keep_their_instruction(paper_data_dir):
    task = load_task(DataConfig(dataset="rtpolarity", data_dir=str(paper_data_dir), pool_per_class=4,
                                dev_per_class=4, test_per_class=4))
    assert instruction(task, 0) == "Write one short movie review with negative sentiment. Reply with the movie review only."


def test_an_empty_class_gives_a_flagged_result_not_the_base_models_accuracy(tiny, topics, tmp_path, caplog):
    model, tok = tiny
    # raw texts for every class but "health": balancing then empties every class
    rows = [{"text": f"{WORDS[t]} text {i}", "label": c, "match_loss": 0.1, "log_perplexity": 1.0}
            for c, t in enumerate(TOPICS[:4]) for i in range(3)]
    cfg = FilterConfig(n_per_class=2, label_filter=False, rank="none")
    with caplog.at_level("WARNING"):
        kept, stats = filter_rows(model, tok, topics, rows, cfg, progress=False)
    assert kept == [] and stats["empty"] is True and stats["short"] == TOPICS
    assert "EMPTY" in caplog.text and "health" in caplog.text
    partial, stats = filter_rows(model, tok, topics, rows, FilterConfig(n_per_class=2, label_filter=False,
                                                                       rank="none", balance=False), progress=False)
    assert stats["empty"] is False and stats["short"] == ["health"] and len(partial) == 8

    result = evaluate_method("gradmm", kept, model, tok, topics, FT, seed=0, progress=False)
    assert result["empty_trainset"] is True and result["test_accuracy"] is None and result["finetuned"] is False
    with pytest.raises(ValueError, match="empty"):  # the library call refuses outright
        finetune_and_evaluate(model, tok, [], topics, FT, seed=0, progress=False)

    results = tmp_path / "runs" / "news" / "results"
    results.mkdir(parents=True)
    full = evaluate_method("random_real", [{"text": ex.text, "label": ex.label} for ex in topics.pool], model, tok,
                           topics, FT, seed=0, progress=False)
    for method, r in (("gradmm", result), ("random_real", full)):
        (results / f"{method}-n2-seed0.json").write_text(json.dumps({**r, "dataset": "news", "model": "tiny-random",
                                                                     "n_per_class": 2}))
    df = report.collect_results(tmp_path / "runs")
    assert bool(df.set_index("method").loc["gradmm", "empty_trainset"]) and pd.isna(df.set_index("method").loc["gradmm", "accuracy"])
    table = report.markdown_summary(df)
    assert "| gradmm | EMPTY set |" in table and "| random_real | " in table
    assert report.format_accuracy(0.7, 0.1, empty_runs=1, runs=3) == "EMPTY set (1 of 3 runs)"


def test_truncation_keeps_the_head_of_a_long_text_and_the_prompt_suffix(tiny, tmp_path):
    model, tok = tiny
    task = load_task(topic_cfg(write_topics(tmp_path / "news.jsonl"), max_text_tokens=6))
    long = "Headline: markets rally. " + "and then the body goes on and on " * 40
    prompt = template_prompt(tok, task.template, long)
    assert prompt.startswith("Headline: markets rally.") and prompt.endswith("\nTopic:")
    assert len(tok(prompt.split("\nTopic:")[0], add_special_tokens=False).input_ids) <= 6
    head = prompt[:-len("\nTopic:")]
    # matching and fine-tuning see the same cut text
    H_long, z_long = hidden_and_logits(model, tok, [long], task.template)
    H_head, z_head = hidden_and_logits(model, tok, [head], task.template)
    assert (H_long - H_head).abs().max() < 1e-5 and (z_long - z_head).abs().max() < 1e-4
    ids = first_label_ids(tok, task.template)
    assert (label_logits(model, tok, [long], task.template, ids) - label_logits(model, tok, [head], task.template, ids)
            ).abs().max() < 1e-4
    # the default limit leaves the short texts of the existing datasets exactly as they were
    for ex in toy_examples(5):
        assert template_prompt(tok, TEMPLATES["paper"], ex.text) == TEMPLATES["paper"].prompt(ex.text)


def test_two_local_datasets_get_different_names(tmp_path):
    a = load_task(topic_cfg(write_topics(tmp_path / "agnews.jsonl")))
    b = load_task(topic_cfg(write_topics(tmp_path / "bbc.jsonl")))
    assert (a.name, b.name) == ("agnews", "bbc")
    assert load_task(topic_cfg(tmp_path / "bbc.jsonl", name="bbc-topics")).name == "bbc-topics"
    with pytest.raises(ValueError, match="built-in dataset's name"):
        load_task(topic_cfg(write_topics(tmp_path / "tweets.jsonl")))


def test_multi_token_label_words_are_refused_before_generate_filter_and_finetune(tiny, tmp_path):
    model, tok = tiny
    path = write_topics(tmp_path / "news.jsonl")
    words = [" world", " sports", " business", " sci/tech", " health"]
    task = load_task(topic_cfg(path, label_words=words))
    message = r"' sci/tech' is 3 tokens \['Ġsci', '/', 'tech'\]"
    with pytest.raises(ValueError, match=message):
        finetune_and_evaluate(model, tok, task.pool, task, FT, seed=0, progress=False)
    with pytest.raises(ValueError, match=message):
        filter_rows(model, tok, task, [], FilterConfig(label_filter=False, rank="none"), progress=False)
    gen = GenerateConfig(n_per_class=2, batch_size=2, outer_steps=1, inner_steps=1, topk=20, init_candidates=2,
                         max_seq_len=10)
    with pytest.raises(ValueError, match=message):
        generate(topic_cfg(path, label_words=words), ModelConfig(name="tiny-random", device="cpu"), gen, DPConfig(),
                 tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run directory is claimed


@pytest.mark.parametrize("stage", ["prepare", "generate", "filter", "baseline", "finetune", "diagnose"])
def test_every_stage_takes_a_template(stage):
    extra = {"filter": ["--raw", "r.jsonl"], "baseline": ["--method", "random_real"],
             "finetune": ["--method", "gradmm", "--train", "t.jsonl"]}.get(stage, [])
    args = build_parser().parse_args([stage, "--template", "review", "--out", "x", *extra])
    assert args.template == "review"


def test_template_with_a_prepared_task_is_refused(topics, tmp_path, capsys):
    from gradmm.cli import main

    write_task(topics, tmp_path / "prepared")
    (tmp_path / "raw.jsonl").write_text("")
    assert main(["filter", "--task", str(tmp_path / "prepared"), "--template", "review", "--raw",
                 str(tmp_path / "raw.jsonl"), "--out", str(tmp_path / "x.jsonl"), "--set", "model.name=tiny-random"]) == 2
    assert "a prepared task keeps the template" in capsys.readouterr().err
