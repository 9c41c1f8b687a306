"""Every canonical directory of the project, named once."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # gradmm/io/paths.py -> the repository
REPORTS_DIR = PROJECT_ROOT / "reports"
TABLES_DIR = REPORTS_DIR / "tables"
FIGURES_DIR = REPORTS_DIR / "figures"
RUNS_DIR = PROJECT_ROOT / "runs"  # the quick pipeline's outputs (DVC outputs with cache: false, committed)
# The shared data directory of the project's own machines; users pass --data-dir or GRADMM_DATA_DIR.
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Where converted models live (GRADMM_CACHE, default ~/.cache/gradmm)."""
    return Path(os.environ.get("GRADMM_CACHE", Path.home() / ".cache" / "gradmm"))


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The directory holding the paper's jsonl splits (rtpolarity/, imdb/), or None if there is none.

    Order: an explicit argument, then GRADMM_DATA_DIR, then ../shared/data beside the checkout.
    """
    if explicit:
        return Path(explicit)
    if os.environ.get("GRADMM_DATA_DIR"):
        return Path(os.environ["GRADMM_DATA_DIR"])
    return SHARED_DATA_DIR if SHARED_DATA_DIR.is_dir() else None


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding params.yaml: the start folder (default: the current one) or one above it.

    The DVC stage runs the notebook from the project root; Jupyter runs it from notebooks/.
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "params.yaml").is_file():
            return folder
    return start
