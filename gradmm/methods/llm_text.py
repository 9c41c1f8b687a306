"""LM-written text: the paper's zero-/few-shot LLM generation baselines. `generate_llm_texts` samples texts of one
class from the LM under the class instruction (gradmm.methods.prompts); `llm_few_shot_gen` puts real examples of
that class from the pool into the instruction."""

import torch
from tqdm.auto import tqdm

from gradmm.core.data import Example
from gradmm.methods.prompts import class_demos, clean_generation, instruction, instruction_ids


@torch.no_grad()
def generate_llm_texts(model, tokenizer, task, label: int, n: int, seed: int, demos: list[Example] = (),
                       temperature: float = 1.0, max_new_tokens: int = 40, batch_size: int = 8,
                       max_rounds: int | None = None, draw: int = 0, progress: bool = True) -> list[str]:
    """n cleaned texts of class `label`, sampled from the LM (plain ancestral sampling at `temperature`,
    no top-k/top-p) under the class instruction; the same (seed, label) gives the same texts, and the global
    RNG is left untouched. `draw` > 0 samples another, independent draw of the same class (a top-up: draw 0's texts
    stay what they were).

    Empty or unusable samples are dropped and more are drawn, up to max_rounds batches (default
    4·ceil(n / batch_size) + 2); raises RuntimeError if that still yields fewer than n texts.
    """
    if not 0 <= label < task.n_classes:
        raise ValueError(f"label {label} outside 0..{task.n_classes - 1}")
    if n < 1:
        return []
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (sampling), got {temperature}")
    device = next(model.parameters()).device
    prompt = torch.tensor([instruction_ids(tokenizer, task, instruction(task, label, list(demos)))], device=device)
    rounds = max_rounds or 4 * (-(-n // batch_size)) + 2
    eos = tokenizer.eos_token_id
    texts: list[str] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # per class: the same seed must not reuse the other class's draws; a top-up draw starts far from every seed's
        torch.manual_seed(seed * 1_000_003 + label + draw * 7_919_000_017)
        bar = tqdm(total=n, desc=f"LM generation {task.class_names[label]}", disable=not progress, leave=False)
        for _ in range(rounds):
            b = min(batch_size, 2 * (n - len(texts)))  # a few spares for the samples cleaning drops
            ids = prompt.expand(b, -1)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            new = out[:, prompt.shape[1]:]
            stopped = (new == eos).any(1).tolist() if eos is not None else [False] * b
            for row, done in zip(tokenizer.batch_decode(new, skip_special_tokens=True), stopped):
                clean = clean_generation(row, truncated=not done)
                if clean and len(texts) < n:
                    texts.append(clean)
                    bar.update(1)
            if len(texts) >= n:
                break
        bar.close()
    if len(texts) < n:
        raise RuntimeError(f"only {len(texts)} of {n} usable texts after {rounds} batches: raise max_new_tokens, "
                           "lower the temperature or check the instruction")
    return texts



def llm_few_shot_gen(model, tokenizer, task, label: int, n: int, seed: int, shots: int = 4, **kw) -> list[str]:
    """generate_llm_texts with `shots` real examples of the class, drawn from the pool with the seed, as demos."""
    demos = class_demos(task, label, shots, f"fewshot-{seed}-{label}")
    return generate_llm_texts(model, tokenizer, task, label, n, seed, demos=demos, **kw)



def generate_llm_dataset(model, tokenizer, task, n_per_class: int, seed: int, shots: int = 0,
                         **kw) -> list[Example]:
    """n_per_class LM-generated Examples of every class (zero-shot, or few-shot with `shots` pool demos)."""
    out = []
    for c in range(task.n_classes):
        texts = (llm_few_shot_gen(model, tokenizer, task, c, n_per_class, seed, shots=shots, **kw) if shots
                 else generate_llm_texts(model, tokenizer, task, c, n_per_class, seed, **kw))
        out += [Example(t, c) for t in texts]
    return out
