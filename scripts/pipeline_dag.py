"""docs/pipeline.md: the DVC pipeline as a readable graph, from `dvc dag --mermaid`.

The expanded DAG has one node per foreach/matrix instance (58 stages, 270 lines); this collapses the instances of
each stage into one node labelled with their count, keeps the edges between stages, and writes the result as a
mermaid block that GitHub renders. `--check` exits 1 when docs/pipeline.md is not what dvc.yaml gives now.

    python scripts/pipeline_dag.py [--check]
"""

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "pipeline.md"
HEADER = """# The pipeline

`dvc.yaml`'s stages, each node standing for all its `foreach`/`matrix` instances (their count in brackets), from
`dvc dag --mermaid` (`python scripts/pipeline_dag.py` writes this file; `dvc dag` shows the expanded graph).
`dvc repro report` runs the classification experiment (the quick profile), `dvc repro quality_report
quality_texts` the quality study's reports, `dvc repro study_report privacy_report transfer_report` the long
studies; what is committed and locked: [reports/README.md](../reports/README.md#reproducing-the-results).

"""


def collapsed_mermaid(mermaid: str) -> str:
    names = dict(re.findall(r'^\s*(node\d+)\["([^"]+)"\]', mermaid, re.M))
    counts = Counter(name.split("@")[0] for name in names.values())
    edges = set()
    for a, b in re.findall(r"^\s*(node\d+)-->(node\d+)", mermaid, re.M):
        edges.add((names[a].split("@")[0], names[b].split("@")[0]))
    order = list(dict.fromkeys(name.split("@")[0] for name in names.values()))
    lines = ["flowchart LR"]
    lines += [f'\t{s}["{s}' + (f" ({counts[s]})" if counts[s] > 1 else "") + '"]' for s in sorted(order)]
    lines += [f"\t{a}-->{b}" for a, b in sorted(edges)]
    return "\n".join(lines)


def render() -> str:
    dvc = Path(sys.executable).parent / "dvc"
    mermaid = subprocess.run([str(dvc), "dag", "--mermaid"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    return HEADER + "```mermaid\n" + collapsed_mermaid(mermaid) + "\n```\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/pipeline.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/pipeline_dag.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
