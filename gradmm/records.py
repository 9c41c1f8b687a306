"""jsonl/json records, written atomically: an interrupted write never leaves half a file, and processes
sharing a run (gradmm.worksharing) that write the same file never see each other's half-written copy."""

import json
import os
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one temporary file per writing process
    tmp.write_text(text)
    tmp.replace(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
