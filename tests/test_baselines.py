"""Real-data subsets (random, herding, k-center), text features, and LM-generated baseline texts."""

import itertools

import numpy as np
import pytest
import torch

from gradmm.core.data import TEMPLATES, Example, Task
from gradmm.core.models import load_model
from gradmm.methods import features, llm_text
from gradmm.methods.features import lm_features, minilm_embeddings
from gradmm.methods.llm_text import generate_llm_texts, llm_few_shot_gen
from gradmm.methods.prompts import clean_generation, instruction
from gradmm.methods.selection import coverage_radius, select_coreset, select_herding, select_kcenter, select_random


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-random", device="cpu")


def blobs(n_per_class=12, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n_per_class, d)) + np.repeat([[3.0] * d, [-3.0] * d], n_per_class, axis=0)
    labels = [0] * n_per_class + [1] * n_per_class
    order = rng.permutation(len(labels))  # interleave the classes: indices must map back to the pool
    return x[order], [labels[i] for i in order]


# -- random --------------------------------------------------------------------------------------
def test_select_random_is_stratified_and_seeded():
    pool = [Example(f"t{i}", i % 3) for i in range(30)]
    a = select_random(pool, 4, 3, seed=0)
    assert [e.label for e in a] == [0] * 4 + [1] * 4 + [2] * 4
    assert len(set(a)) == 12 and set(a) <= set(pool)
    assert a == select_random(pool, 4, 3, seed=0) and a != select_random(pool, 4, 3, seed=1)
    with pytest.raises(ValueError, match="class 2"):
        select_random(pool[:-1], 10, 3, seed=0)


# -- herding ------------------------------------------------------------------------------------
def test_herding_is_deterministic_per_class_without_duplicates():
    x, labels = blobs()
    picks = select_herding(x, labels, 5)
    assert picks == select_herding(x, labels, 5)
    assert len(picks) == 10 and len(set(picks)) == 10
    assert [labels[i] for i in picks] == [0] * 5 + [1] * 5
    assert picks == select_herding(torch.tensor(x), labels, 5)  # numpy or torch


def test_herding_first_pick_is_nearest_the_class_mean_and_beats_random_at_mean_matching():
    x, labels = blobs(n_per_class=20, d=8)
    picks = select_herding(x, labels, 4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c, first in zip((0, 1), (picks[0], picks[4])):
        idx = [i for i, y in enumerate(labels) if y == c]
        mu = xn[idx].mean(0)
        assert first == idx[int(np.argmin(((xn[idx] - mu) ** 2).sum(1)))]
    idx0 = [i for i, y in enumerate(labels) if y == 0]
    mu0 = xn[idx0].mean(0)
    gap = np.linalg.norm(xn[picks[:4]].mean(0) - mu0)
    rng = np.random.default_rng(0)
    random_gaps = [np.linalg.norm(xn[rng.choice(idx0, 4, replace=False)].mean(0) - mu0) for _ in range(200)]
    assert gap < np.percentile(random_gaps, 5)


def test_selection_rejects_too_small_classes():
    x, labels = blobs(n_per_class=3)
    with pytest.raises(ValueError, match="fewer"):
        select_herding(x, labels, 4)
    with pytest.raises(ValueError, match="fewer"):
        select_kcenter(x, labels, 4)


# -- k-center -----------------------------------------------------------------------------------
# Class 0: A=(0,0) nearest the mean (0, 0.5), B=(10,0), C=(-10,0), D=(0,3), E=(1,0), F=(-1,0).
# Farthest-first from A: B (10; tie with C goes to the lower index), then C (10), then D (3).
SQUARE = [(0, 0), (10, 0), (-10, 0), (0, 3), (1, 0), (-1, 0)]


def kcenter_example():
    pts = SQUARE + [(100 + a, 100 + b) for a, b in SQUARE]  # class 1: the same shape, elsewhere
    order = [6, 0, 7, 1, 8, 2, 9, 3, 10, 4, 11, 5]  # interleaved pool
    return np.array([pts[i] for i in order], dtype=float), [int(i >= 6) for i in order], order


def test_kcenter_picks_the_known_farthest_first_sequence():
    x, labels, order = kcenter_example()
    picks = select_kcenter(x, labels, 4, normalize=False)
    assert [order[i] for i in picks] == [0, 1, 2, 3, 6, 7, 8, 9]
    assert picks == select_kcenter(x, labels, 4, normalize=False, seed=123)  # deterministic start


def test_kcenter_coverage_is_optimal_on_the_example():
    x, labels, order = kcenter_example()
    cls0 = [i for i, y in enumerate(labels) if y == 0]
    picks = [i for i in select_kcenter(x, labels, 3, normalize=False) if labels[i] == 0]
    best = min(coverage_radius(x[cls0], [cls0.index(i) for i in s]) for s in itertools.combinations(cls0, 3))
    assert coverage_radius(x[cls0], [cls0.index(i) for i in picks]) == pytest.approx(best) == pytest.approx(3.0)


def test_kcenter_has_no_duplicates_even_with_duplicate_points():
    x = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0]], dtype=float)
    picks = select_kcenter(x, [0] * 5, 5, normalize=False)
    assert sorted(picks) == [0, 1, 2, 3, 4]
    x2, labels = blobs()
    picks = select_kcenter(x2, labels, 6)
    assert len(set(picks)) == 12 and [labels[i] for i in picks] == [0] * 6 + [1] * 6


def test_select_coreset_returns_examples_of_each_class():
    pool = [Example(f"text {i}", i % 2) for i in range(20)]
    x, _ = blobs(n_per_class=10)
    for method in ("herding", "kcenter"):
        out = select_coreset(pool, method, 3, 2, seed=0, features=x)
        assert [e.label for e in out] == [0, 0, 0, 1, 1, 1] and len(set(out)) == 6
    with pytest.raises(ValueError, match="unknown"):
        select_coreset(pool, "bogus", 3, 2, seed=0, features=x)


# -- features -----------------------------------------------------------------------------------
def test_lm_features_do_not_depend_on_left_padding(tiny):
    model, tok = tiny
    texts = ["short", "a much longer text with many more tokens than the first one"]
    both = lm_features(model, tok, texts, TEMPLATES["paper"])
    alone = lm_features(model, tok, texts[:1], TEMPLATES["paper"])
    assert both.shape == (2, model.config.hidden_size)
    torch.testing.assert_close(both[:1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_minilm_embeddings_put_paraphrases_nearer_than_unrelated_text():
    e = minilm_embeddings(["The movie was wonderful and moving.", "A wonderful, moving film.",
                           "The stock market fell sharply on Tuesday."])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    assert features._MINILM is not None  # cached for the next call


# -- LM generation ------------------------------------------------------------------------------
def toy_task(name="rtpolarity", names=("negative", "positive")):
    pool = [Example(f"a {'good' if i % 2 else 'bad'} movie number {i}", i % 2) for i in range(10)]
    return Task(name, list(names), TEMPLATES["paper"], pool, [], [])


def test_instructions_name_the_domain_and_the_class():
    assert instruction(toy_task(), 1) == ("Write one short movie review with positive sentiment. "
                                          "Reply with the movie review only.")
    assert "tweet with negative sentiment" in instruction(toy_task("tweets"), 0)
    assert "tweet expressing joy" in instruction(toy_task("tweet_emotion", ("sadness", "joy")), 1)
    demos = [Example("loved it", 1), Example("what a ride", 1)]
    text = instruction(toy_task(), 1, demos)
    assert "- loved it\n- what a ride" in text and "Write one new short movie review" in text


def test_generate_llm_texts_is_seeded_and_returns_n_clean_strings(tiny):
    model, tok = tiny
    state = torch.random.get_rng_state()
    kw = dict(max_new_tokens=6, batch_size=4, progress=False)
    a = generate_llm_texts(model, tok, toy_task(), 1, 3, seed=0, **kw)
    assert len(a) == 3 and all(isinstance(t, str) and t.strip() == t and t for t in a)
    assert a == generate_llm_texts(model, tok, toy_task(), 1, 3, seed=0, **kw)
    assert a != generate_llm_texts(model, tok, toy_task(), 1, 3, seed=1, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert a != generate_llm_texts(model, tok, toy_task(), 0, 3, seed=0, **kw)  # classes draw differently


def test_few_shot_generation_shows_pool_examples_of_the_class(tiny, monkeypatch):
    model, tok = tiny
    seen = {}

    def fake(model, tokenizer, task, label, n, seed, demos=(), **kw):
        seen.update(label=label, demos=list(demos))
        return ["x y"] * n

    monkeypatch.setattr(llm_text, "generate_llm_texts", fake)
    assert llm_few_shot_gen(model, tok, toy_task(), 1, 2, seed=0, shots=3) == ["x y", "x y"]
    assert len(seen["demos"]) == 3 and all(d.label == 1 and d in toy_task().pool for d in seen["demos"])


def test_clean_generation():
    assert clean_generation('Sure! Here is a short movie review:\n\n"A delight from start to end." It') == \
        "A delight from start to end."
    assert clean_generation("Review: a dull, lifeless film. It never", truncated=True) == "a dull, lifeless film."
    assert clean_generation("Tweet: loving the new phone! #happy") == "loving the new phone! #happy"
    assert clean_generation("ok") == "" and clean_generation("\n\n") == ""
    assert clean_generation("I'm sorry, but as an AI, I can't write reviews.") == ""
    assert clean_generation("I cannot recommend this film.") == "I cannot recommend this film."
    assert clean_generation("The **Die Hard** sequel rocks.") == "The Die Hard sequel rocks."
    assert clean_generation("Write a new short movie review with negative sentiment\nA bore.") == "A bore."


def test_llm_text_top_up_draws_more_of_the_class_the_label_check_leaves_short(tiny, toy_task):
    from dataclasses import replace

    from gradmm.config import ExperimentConfig, FilterConfig
    from gradmm.methods.trainsets import check_experiment, make_trainset

    model, tok = tiny
    filt = FilterConfig(n_per_class=2, label_shots=0)
    plain_exp = ExperimentConfig(llm_raw_per_class=4, n_per_class=2)
    _, plain = make_trainset("llm_zero_shot_gen", model, tok, toy_task, plain_exp, seed=0, filter_cfg=filt,
                             progress=False)
    passed = plain["filter"]["label_consistent"]
    assert min(passed) < 4 <= max(passed)  # the random LM's label check passes one class and not the other
    exp = ExperimentConfig(llm_raw_per_class=4, n_per_class=2, llm_consistent_per_class=4, llm_max_raw_per_class=12)
    _, topped = make_trainset("llm_zero_shot_gen", model, tok, toy_task, exp, seed=0, filter_cfg=filt, progress=False)
    first = [r for r in topped["raw"] if "draw" not in r]
    assert [r["text"] for r in first] == [r["text"] for r in plain["raw"]]  # the first draw is unchanged
    for c in range(2):
        extra = [r for r in topped["raw"] if r.get("draw") and r["label"] == c]
        if passed[c] >= 4:
            assert not extra  # enough passed: no further draw
        else:
            assert 0 < len(extra) <= 8 and {r["draw"] for r in extra} <= {1, 2}
    assert topped["filter"]["raw"][passed.index(min(passed))] > 4
    _, again = make_trainset("llm_zero_shot_gen", model, tok, toy_task, exp, seed=0, filter_cfg=filt, progress=False)
    assert [r["text"] for r in again["raw"]] == [r["text"] for r in topped["raw"]]  # deterministic
    # few-shot: the same demonstrations in every draw, the first draw unchanged
    _, few = make_trainset("llm_few_shot_gen", model, tok, toy_task, replace(plain_exp, llm_shots=1), seed=0,
                           filter_cfg=filt, progress=False)
    _, few_topped = make_trainset("llm_few_shot_gen", model, tok, toy_task, replace(exp, llm_shots=1), seed=0,
                                  filter_cfg=filt, progress=False)
    assert [r["text"] for r in few_topped["raw"] if "draw" not in r] == [r["text"] for r in few["raw"]]
    assert len(few_topped["raw"]) > len(few["raw"])
    with pytest.raises(ValueError, match=r"llm_max_raw_per_class \(6\).*at least 8"):
        check_experiment(ExperimentConfig(llm_raw_per_class=4, llm_consistent_per_class=4, llm_max_raw_per_class=6))
