"""Diversity of a set of texts: distinct-n (Li et al. 2016) and self-BLEU (Zhu et al. 2018, Texygen).

A synthetic set that repeats itself teaches the fine-tuned model less than its size suggests; both metrics
measure that repetition. distinct-n is high and self-BLEU low for a diverse set.

`words` / `ngrams` are the word tokenisation shared with gradmm.experiments.privacy_metrics: lower-cased runs of letters and
digits (inner apostrophes kept, "isn't" is one word); punctuation and whitespace only separate words.
"""

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a text (punctuation dropped)."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of a text in order; none when it has fewer than n words."""
    check_n(n)
    w = words(text)
    return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]


def check_n(n: int, name: str = "n") -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {n!r}")


def check_texts(texts: Sequence[str], name: str = "texts") -> None:
    if isinstance(texts, str):  # a lone string would be read as a list of characters
        raise ValueError(f"{name} must be a list of texts, got the string {texts[:40]!r}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty: the metric is undefined without texts")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / total word n-grams over the whole set (Li et al. 2016, "distinct-n").

    1.0 when no n-gram repeats anywhere in the set; k identical texts (each without internal repeats) give 1/k.
    Texts shorter than n contribute nothing; nan when no text has n words (the ratio is 0/0).
    """
    check_n(n)
    check_texts(texts)
    counts: Counter = Counter(g for t in texts for g in ngrams(t, n))
    total = sum(counts.values())
    return len(counts) / total if total else math.nan


def self_bleu(texts: Sequence[str], max_n: int = 4, lowercase: bool = True) -> float:
    """Mean over texts of the sentence BLEU of each text against all the others as references, in [0, 1].

    Zhu et al. 2018 (Texygen). BLEU is sacrebleu's sentence BLEU: n-gram orders 1..max_n, the default "13a"
    tokeniser, exponential smoothing and effective order (orders longer than the hypothesis are skipped, so
    short texts are not scored 0). ≈1 for identical texts, 0 when no text shares a word with another.
    Quadratic in the number of texts: subsample large sets.
    """
    from sacrebleu.metrics import BLEU

    check_n(max_n, "max_n")
    check_texts(texts)
    if len(texts) < 2:
        raise ValueError(f"self-BLEU needs at least 2 texts (each is scored against the others), got {len(texts)}")
    bleu = BLEU(max_ngram_order=max_n, effective_order=True, lowercase=lowercase)
    scores = [bleu.sentence_score(t, list(texts[:i]) + list(texts[i + 1:])).score for i, t in enumerate(texts)]
    return min(1.0, sum(scores) / len(scores) / 100)  # sacrebleu scores in [0, 100] (+ rounding error)


def ngram_set(texts: Iterable[str], n: int) -> set[tuple[str, ...]]:
    """Every word n-gram that occurs in any of the texts."""
    return {g for t in texts for g in ngrams(t, n)}
