"""How probable the LM finds a token sequence: the mean log-perplexity of its tokens in context (the Z-step's
regulariser, the filter's ranking and the text-quality tables all use it)."""

import torch


def as_ids(ids, device) -> torch.Tensor:
    if ids is None:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1)


def bos_id(model) -> int | None:
    bos = getattr(model.config, "bos_token_id", None)
    if bos is None and getattr(model, "generation_config", None) is not None:
        bos = model.generation_config.bos_token_id
    if isinstance(bos, (list, tuple)):
        bos = bos[0] if bos else None
    return bos


def context_ids(model, prefix_ids, fixed_prefix_ids, device) -> torch.Tensor:
    """Decoding prefix + fixed prefix; the BOS token if both are empty (an empty tensor if there is none)."""
    ctx = torch.cat([as_ids(prefix_ids, device), as_ids(fixed_prefix_ids, device)])
    if ctx.numel() == 0 and bos_id(model) is not None:
        ctx = torch.tensor([bos_id(model)], dtype=torch.long, device=device)
    return ctx


@torch.no_grad()
def log_perplexity(model, ids, prefix_ids=None, start=0, end=None, mask=None, batch_size=16):
    """FloatTensor[B]: mean natural-log NLL of ids[:, start:end] given prefix_ids + ids[:, :start].

    ids: LongTensor[B, T]; mask (optional, [B, T]) marks real tokens of right-padded rows (padding at the
    end never affects earlier positions of a causal LM, so it is only left out of the mean). As in
    project_to_tokens, a BOS token is put first when nothing would precede the first scored token; with no
    BOS that token is not scored. With start = len(fixed prefix) and end = start + free length this
    reproduces the logppl that project_to_tokens returns.
    """
    device = model.get_input_embeddings().weight.device
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    B, T = ids.shape
    end = T if end is None else end
    if not 0 <= start < end <= T:
        raise ValueError(f"need 0 <= start < end <= {T}, got start={start}, end={end}")
    ctx = as_ids(prefix_ids, device)
    if ctx.numel() == 0 and start == 0:  # nothing precedes the first scored token: BOS, as in the Z-step
        ctx = context_ids(model, None, None, device)
    P = ctx.numel()
    keep = mask if mask is not None else torch.ones(B, T, dtype=torch.bool)
    keep = torch.as_tensor(keep, device=device).bool()
    seq = torch.cat([ctx.expand(B, -1), ids], dim=1)
    # logits[:, t] predicts seq[:, t + 1]; only the positions from the one before the first scored token on
    # are needed: P + start - 1 .. P + end - 2.
    first = max(P + start - 1, 0)
    out = []
    for i in range(0, B, batch_size):
        rows = seq[i:i + batch_size, :P + end]
        logits = model(input_ids=rows, use_cache=False, logits_to_keep=P + end - first).logits.float()
        logits = logits[:, :-1]  # the last position predicts the token after end
        target = rows[:, first + 1:]
        nll = -logits.log_softmax(-1).gather(2, target[..., None])[..., 0]  # NLL of seq[:, first+1 .. P+end-1]
        sel = keep[i:i + batch_size, first + 1 - P:end].float()  # P = 0: the first token is not scored
        out.append((nll * sel).sum(1) / sel.sum(1))
    return torch.cat(out)
