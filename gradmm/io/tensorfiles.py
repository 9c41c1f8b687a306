"""Tensors in run directories, stored as data: safetensors plus a JSON header, never pickle.

Run directories travel (DVC remotes, colleagues), so loading one of their files must not be able to run
code: `torch.load` of a pickle can. A file here holds named tensors (always saved from the CPU, so a batch
checkpointed on a GPU resumes on a CPU) and one JSON object of everything else (floats round-trip exactly,
so a resumed batch stays byte-identical).
"""

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

_META = "gradmm"  # the metadata key holding the JSON object


def save_tensors(path: Path, tensors: dict[str, torch.Tensor | None], meta: dict) -> None:
    """Write `tensors` (None values are recorded as absent) and `meta` to `path` atomically."""
    path = Path(path)
    present = {k: v.detach().cpu().clone() for k, v in tensors.items() if v is not None}  # clone: no shared storage
    header = {"meta": meta, "none": sorted(k for k, v in tensors.items() if v is None)}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one temporary file per writing process
    save_file(present, str(tmp), metadata={_META: json.dumps(header)})
    tmp.replace(path)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor | None], dict]:
    """(tensors on the CPU, meta) from a file written by `save_tensors`; a clear error naming the file if it is
    not one (truncated, corrupt, or a pickle from an older version: never unpickled)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = json.loads((f.metadata() or {})[_META])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a readable gradmm tensor file ({type(err).__name__}: {err}); "
                         "delete it to redo that part of the run") from err
    tensors.update({k: None for k in header["none"]})
    return tensors, header["meta"]
