"""jsonl/json records, written atomically: an interrupted write never leaves half a file, and processes
sharing a run (gradmm.io.worksharing) that write the same file never see each other's half-written copy."""

import json
import os
from pathlib import Path


def _numbered_rows(path: Path):
    """(line number, row) of each non-blank line; a line that is not UTF-8 JSON of an object is an error naming
    the file and line."""
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            row = json.loads(line)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}, line {number}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__} {row!r:.60}")
        yield number, row


def read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in _numbered_rows(path)]


def read_text_rows(path: Path) -> list[dict]:
    """The rows of a set of texts (raw texts, a training set): each must hold a string text and an integer label,
    else an error names the file and line (a null text would otherwise become the string 'None')."""
    rows = []
    for number, row in _numbered_rows(path):
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str):
            raise ValueError(f"{path}, line {number}: 'text' must be a string, got {text!r}")
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"{path}, line {number}: 'label' must be an integer class index, got {label!r}")
        rows.append(row)
    return rows


def read_json(path: Path):
    """A JSON file; an unreadable one is an error naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None


def check_writable(path: Path, directory: bool = False) -> None:
    """Raise now, before a stage's expensive work, if its output `path` (a file, or a folder with `directory`)
    could not be written at the end."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise IsADirectoryError(f"output {path} is a folder, not a file") if path.is_dir() else \
            NotADirectoryError(f"output {path} is a file, not a folder")
    # Files are written through a temporary file beside them, folders get files: the folder must be writable.
    folder = path if directory else path.parent
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no write permission in {existing}")


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
