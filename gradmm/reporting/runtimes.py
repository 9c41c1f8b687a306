"""Wall time of each pipeline stage, from the `times.tsv` files that `scripts/full_profile.sh` writes.

The full profile runs the pipeline's own stage commands through make (`scripts/full_makefile.py`); each
finished command appends one line: exit code, wall milliseconds, DVC stage name (`finetune@tweets-gradmm-5-0`,
`generate@rtpolarity-gradmm_dp-2`). A stage that was killed (end of a session) writes nothing; when it resumes,
only its last call is timed, so a resumed generation reads shorter than it took in all. A stage that ran twice
counts its last line. `# machine: <label>` lines say where the lines after them ran.
"""

import re
from pathlib import Path

import pandas as pd

from gradmm.reporting.classification import format_number as num  # a kind with only failed stages has no times: –

STAGE_ORDER = ["prepare", "generate", "filter", "baseline", "finetune"]
STAGE_NAME = re.compile(r"^(?P<kind>[a-z_]+)@(?P<dataset>[a-z0-9_]+)(?:-(?P<rest>.+))?$")
COLUMNS = ["machine", "kind", "dataset", "stage", "seconds", "exit_code"]


def read_stage_times(path: str | Path, machine: str = "unlabelled") -> pd.DataFrame:
    """One row per stage (its last line in the file). A line `# machine: <label>` labels the lines after it
    (scripts/full_profile.sh writes one per call), so one file holds every session's stages."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.startswith("# machine:"):
            machine = line.split(":", 1)[1].strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        match = STAGE_NAME.match(parts[-1]) if len(parts) == 3 else None
        if match is None or not parts[0].lstrip("-").isdigit() or not parts[1].isdigit():
            raise ValueError(f"{path}:{n}: {line!r} is not 'exit code<TAB>milliseconds<TAB>kind@dataset-...'")
        rows.append({"machine": machine, "kind": match["kind"], "dataset": match["dataset"], "stage": parts[2],
                     "seconds": int(parts[1]) / 1000, "exit_code": int(parts[0])})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.drop_duplicates("stage", keep="last").reset_index(drop=True)


def runtime_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, dataset, machine): stages that finished, failed, median / max seconds and hours of the finished."""
    keys = ["kind", "dataset", "machine"]
    done = df[df["exit_code"] == 0].groupby(keys, sort=False)["seconds"]
    out = pd.concat([done.size().rename("finished"),
                     df[df["exit_code"] != 0].groupby(keys, sort=False).size().rename("failed"),
                     done.median().rename("median_seconds"), done.max().rename("max_seconds"),
                     (done.sum() / 3600).rename("total_hours")], axis=1)
    out[["finished", "failed"]] = out[["finished", "failed"]].fillna(0).astype(int)
    out = out.reset_index()
    rank = out["kind"].map(lambda k: STAGE_ORDER.index(k) if k in STAGE_ORDER else len(STAGE_ORDER))
    return (out.assign(_rank=rank).sort_values(["_rank", "dataset", "machine"], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def write_runtime_tables(df: pd.DataFrame, path_csv: str | Path, path_md: str | Path, note: str = "") -> str:
    """The per-stage CSV and a markdown summary; returns the markdown."""
    Path(path_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path_csv, index=False, lineterminator="\n")
    summary = runtime_summary(df)
    lines = ["## Stage runtimes", "", *([note, ""] if note else []),
             "| stage | dataset | machine | finished | failed | median s | max s | total h |", "|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.kind} | {r.dataset} | {r.machine} | {r.finished} | {r.failed} | "
                     f"{num(r.median_seconds, '.0f')} | {num(r.max_seconds, '.0f')} | {num(r.total_hours, '.2f')} |")
    md = "\n".join(lines) + "\n"
    Path(path_md).write_text(md)
    return md
