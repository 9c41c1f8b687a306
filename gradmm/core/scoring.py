"""Classify texts by the LM's score of each label word after the prompt (zero-shot and k-shot in-context)."""

import random

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.core.data import Example, Template
from gradmm.core.models import last_hidden, output_head, position_ids


def label_token_ids(tokenizer, template: Template) -> list[list[int]]:
    """Token ids of each label word as appended after the prompt; rejects words that can't be told apart."""
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in template.label_words]
    for word, toks in zip(template.label_words, ids):
        if not toks:
            raise ValueError(f"label word {word!r} tokenises to nothing; choose another label word")
    if len({tuple(t) for t in ids}) < len(ids):
        raise ValueError(f"label words {list(template.label_words)} tokenise to the same tokens: {ids}")
    return ids


def first_label_ids(tokenizer, template: Template) -> list[int]:
    """The token of each label word: generation matches, the filter ranks and fine-tuning trains on one token
    per class, so a label word of several tokens is refused (in-context scoring alone averages them)."""
    ids = label_token_ids(tokenizer, template)
    long = {w: t for w, t in zip(template.label_words, ids) if len(t) > 1}
    if long:
        shown = "; ".join(f"{w!r} is {len(t)} tokens {tokenizer.convert_ids_to_tokens(t)}" for w, t in long.items())
        raise ValueError(f"label words must be one token each for generate, filter and finetune: {shown}. "
                         "Set data.label_words to single-token words (a leading space usually helps, e.g. ' sports')")
    return [t[0] for t in ids]


def text_head(tokenizer, text: str, max_tokens: int) -> str:
    """The text cut to its first max_tokens tokens (its head: a headline, a first sentence); the text itself,
    character for character, when it is not longer."""
    fast = getattr(tokenizer, "is_fast", False)  # only fast tokenizers give character offsets
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
    if len(enc.input_ids) <= max_tokens:
        return text
    if not fast:
        return tokenizer.decode(enc.input_ids[:max_tokens]).rstrip()
    return text[:enc.offset_mapping[max_tokens - 1][1]].rstrip()


def template_prompt(tokenizer, template: Template, text: str) -> str:
    """template.prompt of the text's head: the one truncation scoring, matching and fine-tuning share; the
    prompt around the text (the suffix the label word follows) is never cut."""
    return template.prompt(text_head(tokenizer, text, template.max_text_tokens))


def few_shot_prefix(demos: list[Example], template: Template, tokenizer=None) -> str:
    """In-context demonstrations, each the filled template followed by its label word (with a tokenizer,
    each demonstration cut as template_prompt cuts it)."""
    fill = template.prompt if tokenizer is None else (lambda text: template_prompt(tokenizer, template, text))
    return "".join(fill(d.text) + template.label_words[d.label] + "\n\n" for d in demos)


def sample_demos(pool: list[Example], shots_per_class: int, n_classes: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    demos = []
    for c in range(n_classes):
        rows = [ex for ex in pool if ex.label == c]
        demos += rng.sample(rows, min(shots_per_class, len(rows)))
    rng.shuffle(demos)
    return demos


def pad_left(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def bos_ids(tokenizer) -> list[int]:
    """[BOS] if the tokenizer starts every text with it by default (Gemma), else [] (SmolLM2, Llama-style
    tokenizers without add_bos). Prompts are encoded without special tokens, so this one is put back."""
    cached = getattr(tokenizer, "_gradmm_bos_ids", None)
    if cached is None:
        bos = tokenizer.bos_token_id
        cached = [bos] if bos is not None and tokenizer("a").input_ids[:1] == [bos] else []
        tokenizer._gradmm_bos_ids = cached  # asked once per tokenizer: every prompt goes through here
    return list(cached)


def prompt_ids(tokenizer, prompt: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of a prompt as the model reads it: the model's BOS (if it expects one) + the prompt's last
    `max_tokens` tokens (the end of a prompt, where the label word follows, must survive truncation)."""
    bos = bos_ids(tokenizer)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    if max_tokens is not None:
        ids = ids[-(max_tokens - len(bos)):]
    return bos + ids


# An in-context prompt keeps its last 512 tokens: its first demonstrations drop out, its own text (already cut
# to the task's max_text_tokens) and the prompt's end survive.
IN_CONTEXT_TOKENS = 512


@torch.no_grad()
def class_log_likelihoods(model, tokenizer, prompts: list[str], template: Template, batch_size: int = 16,
                          max_tokens: int | None = None, progress: bool = True, desc: str = "scoring") -> torch.Tensor:
    """(N, C): length-normalised log-likelihood of each label word after each (already built) prompt; a
    prompt longer than max_tokens keeps its last max_tokens tokens."""
    labels = label_token_ids(tokenizer, template)
    single = all(len(t) == 1 for t in labels)
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, p, max_tokens) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    scores = torch.empty(len(prompts), len(labels))
    W, b = output_head(model)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        if single:  # one forward, last position only
            ids, mask = pad_left([encoded[i] for i in idx], tokenizer.pad_token_id, device)
            h = last_hidden(model, input_ids=ids, attention_mask=mask)
            logp = F.log_softmax(F.linear(h, W, b).float(), dim=-1)
            scores[idx] = logp[:, [t[0] for t in labels]].cpu()
            continue
        for c, word in enumerate(labels):  # one forward per class over prompt + label tokens
            ids, mask = pad_left([encoded[i] + word for i in idx], tokenizer.pad_token_id, device)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
            logp = F.log_softmax(logits[:, -len(word) - 1:-1].float(), dim=-1)
            target = torch.tensor(word, device=device).expand(len(idx), -1)
            scores[idx, c] = logp.gather(-1, target[..., None]).squeeze(-1).mean(-1).cpu()
    return scores


def predict(model, tokenizer, texts: list[str], template: Template, demos: list[Example] = (), **kw) -> torch.Tensor:
    """The class of each text: its label word scored highest after template_prompt (after the demonstrations)."""
    prefix = few_shot_prefix(list(demos), template, tokenizer)
    prompts = [prefix + template_prompt(tokenizer, template, t) for t in texts]
    if demos:
        kw.setdefault("max_tokens", IN_CONTEXT_TOKENS)
    return class_log_likelihoods(model, tokenizer, prompts, template, **kw).argmax(-1)


def accuracy(predictions: torch.Tensor, examples: list[Example]) -> float:
    gold = torch.tensor([ex.label for ex in examples])
    return (predictions == gold).float().mean().item()


def prediction_shares(predictions: torch.Tensor, n_classes: int) -> list[float]:
    """Share of predictions per class: a collapsed classifier predicts one class for nearly everything."""
    return (torch.bincount(predictions, minlength=n_classes).float() / max(len(predictions), 1)).tolist()


def icl_accuracy(model, tokenizer, task, shots_per_class: int = 0, split: str = "test", seed: int = 0,
                 batch_size: int = 16, progress: bool = True) -> dict:
    """Zero-shot (shots_per_class=0) or k-shot in-context accuracy on a split, demonstrations from the pool."""
    if split not in ("dev", "test"):
        raise ValueError(f"split {split!r}: use 'dev' (model selection) or 'test' (reporting)")
    if shots_per_class < 0:
        raise ValueError(f"shots must be ≥ 0, got {shots_per_class}")
    rows = getattr(task, split)
    demos = sample_demos(task.pool, shots_per_class, task.n_classes, seed)
    preds = predict(model, tokenizer, [ex.text for ex in rows], task.template, demos, batch_size=batch_size,
                    progress=progress, desc=f"{shots_per_class}-shot {task.name}/{split}")
    return {"accuracy": accuracy(preds, rows), "prediction_shares": prediction_shares(preds, task.n_classes),
            "n": len(rows), "shots_per_class": shots_per_class, "split": split, "seed": seed}
