"""Diversity metrics on hand-made texts whose answer is known."""

import math

import pytest

from gradmm.experiments.diversity import distinct_n, ngram_set, ngrams, self_bleu, words


def test_words_lowercase_and_drop_punctuation():
    assert words("The film's GREAT, isn't it?!") == ["the", "film's", "great", "isn't", "it"]
    assert words("  ...  ") == []


def test_ngrams_in_order_and_none_for_short_texts():
    assert ngrams("a b c", 2) == [("a", "b"), ("b", "c")]
    assert ngrams("a b", 3) == []
    assert ngram_set(["a b", "b a", "a b"], 2) == {("a", "b"), ("b", "a")}
    with pytest.raises(ValueError, match="n must be"):
        ngrams("a b", 0)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_distinct_n_of_identical_texts_is_one_over_count(n):
    assert distinct_n(["cat sat on a mat"] * 5, n) == pytest.approx(1 / 5)


def test_distinct_n_of_all_distinct_texts_is_one():
    assert distinct_n(["a b c", "d e f", "g h i"], 1) == 1.0
    assert distinct_n(["a b c", "d e f", "g h i"], 2) == 1.0


def test_distinct_n_known_fraction():
    assert distinct_n(["a b", "a c"], 1) == pytest.approx(3 / 4)  # {a, b, c} of 4 unigrams
    assert distinct_n(["x a b", "y a b"], 2) == pytest.approx(3 / 4)  # {xa, ab, ya} of 4 bigrams


def test_distinct_n_undefined_cases():
    assert math.isnan(distinct_n(["a b", "c"], 3))  # no text has 3 words: 0/0
    with pytest.raises(ValueError, match="empty"):
        distinct_n([], 1)
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a b"], 0)
    with pytest.raises(ValueError, match="list of texts"):
        distinct_n("a b c", 1)


def test_self_bleu_identical_texts_is_one():
    assert self_bleu(["the film was great fun"] * 4) == pytest.approx(1.0, abs=1e-6)
    assert self_bleu(["a short one", "A SHORT one"]) == pytest.approx(1.0, abs=1e-6)  # case-insensitive


def test_self_bleu_disjoint_texts_is_zero():
    assert self_bleu(["alpha beta gamma delta", "one two three four", "red green blue pink"]) == pytest.approx(0.0)


def test_self_bleu_partial_overlap_is_between():
    partial = self_bleu(["the cat sat on the mat", "the cat sat on a rug", "a dog ran in the park"])
    assert 0.0 < partial < 1.0
    assert self_bleu(["the cat sat on the mat", "the cat sat on the rug"]) > partial


def test_self_bleu_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(["only one"])
    with pytest.raises(ValueError, match="max_n"):
        self_bleu(["a", "b"], max_n=0)
