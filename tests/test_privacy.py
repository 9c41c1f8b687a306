"""Leakage, membership-inference and canary metrics on hand-made inputs whose answer is known."""

import math

import numpy as np
import pytest
import torch

from gradmm.core.data import TEMPLATES, Example
from gradmm.experiments.privacy_metrics import (
    attack_metrics,
    canary_exposure,
    canary_in_texts,
    candidate_log_perplexities,
    exact_match_rate,
    exposure_from_rank,
    leakage_vs_holdout,
    loss_attack_scores,
    make_canaries,
    nearest_neighbour_similarity,
    ngram_overlap,
    per_example_losses,
    random_secrets,
    reference_attack_scores,
)

POOL = ["the film was a wonderful surprise", "terrible acting and an awful plot", "i loved every minute of it"]


@pytest.fixture(scope="module")
def tiny():
    from gradmm.core.models import load_model

    torch.set_num_threads(1)
    return load_model("tiny-random", "cpu", "float32")


# ---------------------------------------------------------------------------------------------------------
# Verbatim and semantic leakage
@pytest.mark.parametrize("n", [1, 2, 4])
def test_identical_texts_overlap_fully(n):
    assert ngram_overlap(POOL, POOL, n) == 1.0
    assert exact_match_rate(POOL, POOL) == 1.0


def test_disjoint_vocabularies_overlap_zero():
    other = ["red green blue pink", "one two three four five"]
    assert ngram_overlap(other, POOL, 1) == 0.0
    assert exact_match_rate(other, POOL) == 0.0


def test_ngram_overlap_known_fraction_and_normalisation():
    assert ngram_overlap(["a b c d"], ["a b c x"], 2) == pytest.approx(2 / 3)  # ab, bc shared; cd not
    assert ngram_overlap(["The FILM, was... great!"], ["the film was great"], 4) == 1.0
    assert ngram_overlap(["a b", "a b c"], ["a b c"], 3) == 1.0  # the short text adds no 3-gram
    assert ngram_overlap(["a b"], [], 1) == 0.0


def test_exact_match_normalises_case_and_whitespace_only():
    assert exact_match_rate(["  The   Film\twas great "], ["the film was great"]) == 1.0
    assert exact_match_rate(["the film was great."], ["the film was great"]) == 0.0
    assert exact_match_rate(["a", "b", "c", "d"], ["b", "d"]) == 0.5


def test_leakage_undefined_and_bad_input():
    assert math.isnan(ngram_overlap(["a b"], POOL, 3))  # no text has 3 words: 0/0
    with pytest.raises(ValueError, match="n must be"):
        ngram_overlap(POOL, POOL, 0)
    with pytest.raises(ValueError, match="empty"):
        ngram_overlap([], POOL, 1)
    with pytest.raises(ValueError, match="empty"):
        exact_match_rate([], POOL)


def test_leakage_vs_holdout_reports_both_sides():
    synthetic = [POOL[0], "a completely new sentence about a movie"]
    holdout = ["i loved every minute of the show", "nothing in common here at all"]
    out = leakage_vs_holdout(synthetic, POOL, holdout, ns=(4,))
    assert set(out) == {"exact_match_synthetic", "exact_match_holdout", "ngram4_synthetic", "ngram4_holdout"}
    assert out["exact_match_synthetic"] == 0.5 and out["exact_match_holdout"] == 0.0
    assert out["ngram4_synthetic"] == pytest.approx(3 / 7)  # the copy's 3 four-grams of 3 + 4
    assert out["ngram4_holdout"] == pytest.approx(2 / 7)  # "i loved every minute", "loved every minute of" of 4 + 3
    with pytest.raises(ValueError, match="ns"):
        leakage_vs_holdout(synthetic, POOL, holdout, ns=(0,))


def test_nearest_neighbour_similarity_hand_made_vectors():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    query = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = [1.0, 0.0, 1 / math.sqrt(2), 0.0]  # scale-free; orthogonal; 45°; zero row
    assert nearest_neighbour_similarity(query, ref) == pytest.approx(expected)
    sims = nearest_neighbour_similarity(torch.tensor(query, dtype=torch.float32), torch.tensor(ref))
    assert isinstance(sims, np.ndarray) and sims == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="same width"):
        nearest_neighbour_similarity(query, ref[:, :2])
    with pytest.raises(ValueError, match="no rows"):
        nearest_neighbour_similarity(query, np.zeros((0, 3)))


# ---------------------------------------------------------------------------------------------------------
# Membership inference
def test_attack_on_separable_scores_is_perfect():
    assert attack_metrics([5.0, 6.0, 7.0], [1.0, 2.0, 3.0]) == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0}
    assert attack_metrics([1.0, 2.0], [5.0, 6.0]) == {"auc": 0.0, "tpr_at_1pct_fpr": 0.0}


def test_attack_on_identical_distributions_is_chance():
    rng = np.random.default_rng(0)
    out = attack_metrics(rng.normal(size=5000), rng.normal(size=5000))
    assert out["auc"] == pytest.approx(0.5, abs=0.05)
    assert out["tpr_at_1pct_fpr"] < 0.03
    same = rng.normal(size=1000)
    assert attack_metrics(same, same)["auc"] == pytest.approx(0.5)


def test_tpr_at_1pct_fpr_uses_the_best_threshold_within_1pct():
    nonmembers = np.arange(100.0)  # one false positive per threshold step below 99
    assert attack_metrics([200.0] * 50 + [98.5] * 50, nonmembers)["tpr_at_1pct_fpr"] == 1.0  # FPR exactly 0.01
    assert attack_metrics([200.0] * 50 + [97.5] * 50, nonmembers)["tpr_at_1pct_fpr"] == 0.5  # 97.5 costs 2 %


def test_attack_rejects_empty_or_nan_scores():
    with pytest.raises(ValueError, match="member_scores"):
        attack_metrics([], [1.0])
    with pytest.raises(ValueError, match="nonmember_scores"):
        attack_metrics([1.0], [float("nan")])
    with pytest.raises(ValueError, match="same shape"):
        reference_attack_scores([1.0, 2.0], [1.0])


def test_reference_calibration_separates_what_the_loss_attack_cannot():
    # Each example has an intrinsic difficulty that the target and the reference model share; training lowers
    # the target's loss on members by 0.5, which the spread of difficulties hides from the plain loss attack.
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0, 20, size=2000)
    member = np.arange(2000) < 1000
    target = difficulty - 0.5 * member
    reference = difficulty + rng.normal(0, 0.05, size=2000)
    plain = loss_attack_scores(target)
    calibrated = reference_attack_scores(target, reference)
    assert plain == pytest.approx(-target)
    assert attack_metrics(plain[member], plain[~member])["auc"] < 0.6
    out = attack_metrics(calibrated[member], calibrated[~member])
    assert out["auc"] > 0.99 and out["tpr_at_1pct_fpr"] > 0.9


def test_per_example_losses_match_the_finetuning_loss(tiny):
    from gradmm.core.scoring import first_label_ids
    from gradmm.methods.finetune import classification_loss

    model, tok = tiny
    template = TEMPLATES["paper"]
    examples = [Example(t, i % 2) for i, t in enumerate(POOL + ["short", "a much longer text than the others"])]
    losses = per_example_losses(model, tok, examples, template, batch_size=2)
    assert losses.shape == (5,) and (losses > 0).all()
    with torch.no_grad():
        mean = classification_loss(model, tok, examples, template, first_label_ids(tok, template)).item()
    assert losses.mean() == pytest.approx(mean, rel=1e-4)
    assert per_example_losses(model, tok, examples, template, batch_size=16) == pytest.approx(losses, rel=1e-4)
    with pytest.raises(ValueError, match="labels \\[2\\]"):
        per_example_losses(model, tok, [Example("x", 2)], template)


# ---------------------------------------------------------------------------------------------------------
# Canaries
def test_canaries_are_unique_and_reproducible():
    canaries = make_canaries(20, seed=3)
    assert canaries == make_canaries(20, seed=3) and canaries != make_canaries(20, seed=4)
    assert len({c.secret for c in canaries}) == len({c.text for c in canaries}) == 20
    for c in canaries:
        assert len(c.secret) == 6 and c.secret.isdigit() and c.secret in c.text
        assert c.text.startswith("my secret code is ")
    alternatives = random_secrets(50, seed=0, exclude=[canaries[0].secret])
    assert canaries[0].secret not in alternatives and len(set(alternatives)) == 50
    with pytest.raises(ValueError, match="only 4 strings"):
        random_secrets(5, seed=0, length=2, alphabet="ab")


def test_canary_in_texts_counts_secrets_found_verbatim():
    canaries = make_canaries(3, seed=0)
    texts = [f"blah {canaries[0].secret} blah", canaries[2].text, "nothing here"]
    assert canary_in_texts(canaries, texts) == 2
    assert canary_in_texts(canaries, []) == 0


def test_exposure_from_rank():
    assert exposure_from_rank(1, 8) == 3.0  # ranked first among 8: log2 8
    assert exposure_from_rank(8, 8) == 0.0
    assert exposure_from_rank(2, 8) == 2.0
    with pytest.raises(ValueError, match="rank"):
        exposure_from_rank(0, 8)
    with pytest.raises(ValueError, match="rank"):
        exposure_from_rank(9, 8)


def test_candidate_log_perplexities_match_full_sequences(tiny):
    model, tok = tiny
    prefix, candidates = "my secret code is ", ["123456", "999", "abc def"]
    nll = candidate_log_perplexities(model, tok, prefix, candidates)
    full = []
    for c in candidates:  # total NLL of the whole sequence (no BOS, as in fine-tuning), one unpadded forward each
        ids = torch.tensor([tok(prefix + c, add_special_tokens=False).input_ids])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        full.append(-logp.gather(1, ids[0, 1:, None]).sum().item())
    # the shared prefix adds the same constant to every candidate
    assert (np.array(full) - nll.numpy()) == pytest.approx(np.full(3, full[0] - nll[0].item()), abs=1e-3)


def test_canary_exposure_on_tiny_model(tiny):
    model, tok = tiny
    canary = make_canaries(1, seed=0)[0]
    candidates = [canary.secret] + random_secrets(15, seed=1, exclude=[canary.secret])
    nll = candidate_log_perplexities(model, tok, canary.prefix, candidates)
    best, worst = candidates[int(nll.argmin())], candidates[int(nll.argmax())]
    assert canary_exposure(model, tok, canary.prefix, best, candidates) == pytest.approx(4.0)  # log2 16
    assert canary_exposure(model, tok, canary.prefix, worst, candidates) == pytest.approx(0.0)
    value = canary_exposure(model, tok, canary.prefix, canary.secret, candidates[1:])
    assert 0.0 <= value <= 4.0
    with pytest.raises(ValueError, match="alternatives"):
        canary_exposure(model, tok, canary.prefix, canary.secret, [canary.secret])
