"""How much synthetic texts leak the real texts the generator saw (the "generation pool").

* Verbatim leakage: exact matches and shared word n-grams with the pool, beside the same rates between a
  held-out real sample and the pool (two real samples share common phrases too: that is the baseline).
* Semantic closeness: each synthetic text's nearest pool text by cosine similarity of sentence embeddings.
* Membership inference against a model fine-tuned on the texts: the loss attack (Yeom et al. 2018) and the
  reference-calibrated attack (Carlini et al. 2022 "LiRA", Watson et al. 2022), scored by AUC and TPR at 1% FPR.
* Canaries (Carlini et al. 2019, "The Secret Sharer"): secrets planted in the data, measured by exposure.

Word tokenisation and n-grams are gradmm.experiments.diversity's (lower-cased, punctuation dropped).
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.core.data import Example, Template
from gradmm.core.perplexity import log_perplexity
from gradmm.core.scoring import first_label_ids
from gradmm.experiments.diversity import check_n, check_texts, ngram_set, ngrams
from gradmm.methods.features import minilm_embeddings
from gradmm.methods.finetune import label_logits


# --------------------------------------------------------------------------------------------------
# Verbatim and semantic leakage
def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _overlap(texts: Sequence[str], ref_grams: set, n: int) -> float:
    grams = [g for t in texts for g in ngrams(t, n)]
    return sum(g in ref_grams for g in grams) / len(grams) if grams else math.nan


def ngram_overlap(texts: Sequence[str], reference: Sequence[str], n: int) -> float:
    """Share of the texts' word n-grams (counted with repetition) that occur in some reference text.

    Texts shorter than n words contribute no n-grams; nan when no text has n words (the share is 0/0).
    """
    check_n(n)
    check_texts(texts)
    return _overlap(texts, ngram_set(reference, n), n)


def exact_match_rate(texts: Sequence[str], reference: Sequence[str]) -> float:
    """Share of texts identical to some reference text up to case and whitespace (punctuation counts)."""
    check_texts(texts)
    ref = {_normalise(r) for r in reference}
    return sum(_normalise(t) in ref for t in texts) / len(texts)


def leakage_vs_holdout(synthetic: Sequence[str], pool: Sequence[str], holdout: Sequence[str],
                       ns: Sequence[int] = (4, 8)) -> dict[str, float]:
    """Exact-match and n-gram overlap with the pool of the synthetic texts and, as baseline, of held-out real
    texts the generator never saw. Keys: exact_match_{synthetic,holdout}, ngram{n}_{synthetic,holdout}."""
    check_texts(synthetic, "synthetic")
    check_texts(holdout, "holdout")
    out = {"exact_match_synthetic": exact_match_rate(synthetic, pool),
           "exact_match_holdout": exact_match_rate(holdout, pool)}
    for n in ns:
        check_n(n, "every n in ns")
        grams = ngram_set(pool, n)  # built once for both sides
        out[f"ngram{n}_synthetic"] = _overlap(synthetic, grams, n)
        out[f"ngram{n}_holdout"] = _overlap(holdout, grams, n)
    return out


def nearest_neighbour_similarity(query_emb, ref_emb) -> np.ndarray:
    """(Q,) cosine similarity of each query row to its most similar reference row (torch or numpy input).

    Rows need not be normalised; an all-zero row has similarity 0 to everything.
    """
    q, r = (x.detach().cpu().double() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=float))
            for x in (query_emb, ref_emb))
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise ValueError(f"need 2-D embeddings of the same width, got shapes {tuple(q.shape)} and {tuple(r.shape)}")
    if len(r) == 0:
        raise ValueError("ref_emb has no rows: no nearest neighbour to find")
    return (F.normalize(q, dim=1) @ F.normalize(r, dim=1).T).max(1).values.numpy()


def nn_similarity_texts(texts: Sequence[str], reference: Sequence[str]) -> np.ndarray:
    """nearest_neighbour_similarity of all-MiniLM-L6-v2 sentence embeddings of the texts and the reference."""
    check_texts(texts)
    check_texts(reference, "reference")
    return nearest_neighbour_similarity(minilm_embeddings(list(texts)), minilm_embeddings(list(reference)))


# --------------------------------------------------------------------------------------------------
# Membership inference
def attack_metrics(member_scores, nonmember_scores) -> dict[str, float]:
    """AUC and TPR at 1% FPR of an attack whose score is higher for "more likely a member".

    TPR@1%FPR is the largest TPR of any threshold whose FPR is ≤ 0.01 (no interpolation: a threshold the
    attacker could actually use). With fewer than 100 non-members that means FPR = 0.
    """
    from sklearn.metrics import roc_auc_score, roc_curve  # heavy: imported where used, not at every CLI start

    m, nm = (np.asarray(s, dtype=float).ravel() for s in (member_scores, nonmember_scores))
    for name, s in (("member_scores", m), ("nonmember_scores", nm)):
        if s.size == 0 or not np.isfinite(s).all():
            raise ValueError(f"{name} must be a non-empty array of finite numbers, got {s[:5]}...")
    y, s = np.r_[np.ones(m.size), np.zeros(nm.size)], np.r_[m, nm]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {"auc": float(roc_auc_score(y, s)), "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max())}


def loss_attack_scores(losses) -> np.ndarray:
    """Loss attack (Yeom et al. 2018): a lower loss under the target model means "more likely a member"."""
    return -np.asarray(losses, dtype=float)


def reference_attack_scores(target_losses, reference_losses) -> np.ndarray:
    """Reference-calibrated attack: reference − target loss (Carlini et al. 2022, Watson et al. 2022).

    A reference model not trained on the example shares its intrinsic difficulty, so the difference keeps only
    what training on it changed: hard members are no longer mistaken for non-members.
    """
    t, r = np.asarray(target_losses, dtype=float), np.asarray(reference_losses, dtype=float)
    if t.shape != r.shape:
        raise ValueError(f"target_losses {t.shape} and reference_losses {r.shape} must have the same shape")
    return r - t


@torch.no_grad()
def per_example_losses(model, tokenizer, examples: Sequence[Example], template: Template, batch_size: int = 16,
                       progress: bool = False) -> np.ndarray:
    """(N,) cross-entropy over the label words' first tokens of each example: the fine-tuning loss, unreduced."""
    check_n(batch_size, "batch_size")
    label_ids = first_label_ids(tokenizer, template)
    bad = sorted({ex.label for ex in examples if not 0 <= ex.label < len(label_ids)})
    if bad:
        raise ValueError(f"labels {bad} are outside 0..{len(label_ids) - 1} (the template has {len(label_ids)})")
    out = []
    for i in tqdm(range(0, len(examples), batch_size), desc="losses", disable=not progress, leave=False):
        batch = examples[i:i + batch_size]
        logits = label_logits(model, tokenizer, [ex.text for ex in batch], template, label_ids)
        target = torch.tensor([ex.label for ex in batch], device=logits.device)
        out.append(F.cross_entropy(logits, target, reduction="none").cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


# --------------------------------------------------------------------------------------------------
# Canaries
@dataclass(frozen=True)
class Canary:
    prefix: str  # the context the secret follows; canary_exposure scores the secret after it
    secret: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.secret + self.suffix


CANARY_WORDS = ("great", "awful", "boring", "moving", "funny", "dull", "brilliant", "terrible")


def random_secrets(n: int, seed: int, length: int = 6, alphabet: str = "0123456789",
                   exclude: Sequence[str] = ()) -> list[str]:
    """n distinct random strings of `length` characters of `alphabet`, none of them in `exclude`."""
    check_n(n)
    space = len(alphabet) ** length
    if n > space - len({e for e in exclude if len(e) == length and set(e) <= set(alphabet)}):
        raise ValueError(f"n={n} secrets requested but only {space} strings of length {length} exist")
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < n:
        s = "".join(rng.choice(alphabet) for _ in range(length))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def make_canaries(n: int, seed: int, length: int = 6, alphabet: str = "0123456789") -> list[Canary]:
    """n canaries "my secret code is <secret> and the film was <word>." with distinct random secrets."""
    rng = random.Random(seed + 1)  # the word choice, independent of the secrets' stream
    return [Canary("my secret code is ", s, f" and the film was {rng.choice(CANARY_WORDS)}.")
            for s in random_secrets(n, seed, length, alphabet)]


def canary_in_texts(canaries: Sequence[Canary], texts: Sequence[str]) -> int:
    """How many canaries' secrets occur verbatim (as substrings) in some text."""
    return sum(any(c.secret in t for t in texts) for c in canaries)


def exposure_from_rank(rank: int, n_alternatives: int) -> float:
    """Exposure log2|R| − log2(rank) of a secret ranked `rank` (1 = most likely) among |R| = n_alternatives
    candidates, the secret included: log2|R| when it is ranked first, 0 when last."""
    if not 1 <= rank <= n_alternatives:
        raise ValueError(f"rank must be in 1..{n_alternatives} (n_alternatives), got {rank}")
    return math.log2(n_alternatives) - math.log2(rank)


@torch.no_grad()
def candidate_log_perplexities(model, tokenizer, prefix: str, candidates: Sequence[str],
                               batch_size: int = 16) -> torch.Tensor:
    """(K,) total NLL (nats) of each prefix + candidate minus the part shared by all: ranks as the full
    sequences' log-perplexity does (Carlini et al. 2019), whatever the tokeniser does at the boundary."""
    seqs = [tokenizer(prefix + c, add_special_tokens=False).input_ids for c in candidates]
    shared = 0  # tokens common to every candidate's sequence: the context, scored once
    while all(len(s) > shared and s[shared] == seqs[0][shared] for s in seqs):
        shared += 1
    if shared == 0 or any(len(s) == shared for s in seqs):
        raise ValueError(f"prefix {prefix!r} shares no token with the candidates, or a candidate adds no token")
    tails = [s[shared:] for s in seqs]
    width = max(map(len, tails))
    ids = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in tails])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in tails])
    mean = log_perplexity(model, ids, prefix_ids=seqs[0][:shared], mask=mask, batch_size=batch_size)
    return mean.cpu() * mask.sum(1)  # the total, not the mean: secrets may tokenise to different lengths


def canary_exposure(model, tokenizer, canary_prefix: str, secret: str, alternatives: Sequence[str],
                    batch_size: int = 16) -> float:
    """Exposure of `secret` (Carlini et al. 2019): log2|R| − log2(rank of the secret in R), R = the secret and
    the alternatives, ranked by the LM's log-perplexity of canary_prefix + candidate (rank 1 = most likely;
    ties go to the secret). In [0, log2|R|]; about 1/ln 2 ≈ 1.44 on average for an unmemorised one, log2|R| when memorised."""
    candidates = [secret] + sorted(set(alternatives) - {secret})
    if len(candidates) < 2:
        raise ValueError("alternatives must hold at least one candidate other than the secret")
    nll = candidate_log_perplexities(model, tokenizer, canary_prefix, candidates, batch_size)
    rank = 1 + int((nll[1:] < nll[0]).sum())
    return exposure_from_rank(rank, len(candidates))
