import pytest
import torch

from gradmm.core.data import TEMPLATES, Example, Template
from gradmm.core.scoring import (
    class_log_likelihoods,
    few_shot_prefix,
    first_label_ids,
    icl_accuracy,
    label_token_ids,
    predict,
    sample_demos,
)


def _manual(model, tok, prompt, words):
    """Length-normalised log-likelihood of each word after the prompt, one unbatched forward each."""
    out = []
    for w in words:
        p, l = tok(prompt, add_special_tokens=False).input_ids, tok(w, add_special_tokens=False).input_ids
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + l])).logits[0], -1)
        out.append(sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(l)) / len(l))
    return out


@pytest.mark.parametrize("words", [(" bad", " great"), (" not so good at all", " really quite wonderful")])
def test_batched_left_padded_scores_equal_unbatched(tiny_untied, words):
    model, tok = tiny_untied
    template = Template("{text} It was", words)
    texts = ["ok", "a much longer text than the other one, with many more tokens in it"]
    scores = class_log_likelihoods(model, tok, [template.prompt(t) for t in texts], template, progress=False)
    for i, t in enumerate(texts):
        assert scores[i].tolist() == pytest.approx(_manual(model, tok, template.prompt(t), words), abs=1e-4)


def test_label_words_that_cannot_be_told_apart(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="tokenises to nothing"):
        label_token_ids(tok, Template("{text}", ("", " great")))
    with pytest.raises(ValueError, match="same tokens"):
        label_token_ids(tok, Template("{text}", (" great", " great")))
    with pytest.raises(ValueError, match=r"' great movie' is 2 tokens \['Ġgreat', 'Ġmovie'\]"):
        first_label_ids(tok, Template("{text}", (" great movie", " great film")))  # one token per word only


def test_few_shot_prompt_and_demos():
    pool = [Example(f"t{i}", i % 2) for i in range(10)]
    demos = sample_demos(pool, 2, 2, seed=0)
    assert sorted(d.label for d in demos) == [0, 0, 1, 1] and demos == sample_demos(pool, 2, 2, seed=0)
    assert few_shot_prefix(demos[:1], TEMPLATES["paper"]) == f"{demos[0].text} It was{TEMPLATES['paper'].label_words[demos[0].label]}\n\n"


def test_icl_accuracy_fields(tiny, toy_task):
    model, tok = tiny
    r = icl_accuracy(model, tok, toy_task, shots_per_class=1, split="dev", progress=False)
    assert 0 <= r["accuracy"] <= 1 and sum(r["prediction_shares"]) == pytest.approx(1) and r["n"] == 20
    with pytest.raises(ValueError, match="split 'pool'"):
        icl_accuracy(model, tok, toy_task, split="pool")


@pytest.mark.slow
def test_smollm2_scores_obvious_reviews(smollm2):
    model, tok = smollm2
    texts = ["this movie was wonderful, i loved every minute of it.", "a brilliant, moving and beautiful film.",
             "an awful, boring waste of time. i hated it.", "terrible acting and a stupid plot."]
    preds = predict(model, tok, texts, TEMPLATES["review"], progress=False)
    assert preds.tolist() == [1, 1, 0, 0]


def test_prompts_get_the_bos_a_tokenizer_adds_by_default(tiny):
    import copy

    from gradmm.core.scoring import bos_ids, prompt_ids

    _, tok = tiny
    assert bos_ids(tok) == [] and prompt_ids(tok, "a b c") == tok("a b c", add_special_tokens=False).input_ids
    gemma_like = copy.deepcopy(tok)
    gemma_like.add_bos_token = True  # as Gemma's tokenizer: every text starts with <bos>
    gemma_like.__dict__.pop("_gradmm_bos_ids", None)  # the answer cached for the original tokenizer
    assert gemma_like("a").input_ids[0] == gemma_like.bos_token_id
    ids = prompt_ids(gemma_like, "one two three four five", max_tokens=3)
    assert ids[0] == gemma_like.bos_token_id and len(ids) == 3  # BOS kept, the prompt's end kept
    assert ids[1:] == tok("one two three four five", add_special_tokens=False).input_ids[-2:]
