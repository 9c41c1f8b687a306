"""Write a Makefile of the classification stages of a checkout (its params.yaml: e.g. the full profile), for
a machine without DVC: `make -k -j N` runs the stages' own commands in dependency order, N at a time, and
appends each command's exit code and wall time (ms) to times.tsv, its output to logs/<stage>.log. A directory output stands for its marker file (raw.jsonl).

    python scripts/gpu/full_makefile.py CHECKOUT OUT_MAKEFILE [--skip-existing]

--skip-existing: leave out stages whose outputs already exist in CHECKOUT (e.g. the baselines that need no
GPU, built where MiniLM is installed).
"""

import argparse
from pathlib import Path

from dvc.repo import Repo

STAGES = ("generate", "filter", "baseline", "finetune")


def marker(path: str, is_dir: bool) -> str:
    return f"{path}/raw.jsonl" if is_dir else path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("makefile")
    ap.add_argument("--skip-existing", action="store_true")
    args = ap.parse_args()
    root = Path(args.checkout).resolve()
    repo = Repo(str(root))
    produced, rules = {}, []
    for st in repo.index.stages:
        if st.name.split("@")[0] not in STAGES:
            continue
        outs = [marker(str(Path(o.fs_path).relative_to(root)), st.name.startswith("generate@")) for o in st.outs]
        if args.skip_existing and all((root / o).exists() for o in outs):
            continue
        for o in outs:
            produced[str(Path(o).parent) if o.endswith("/raw.jsonl") else o] = outs[0]
        rules.append((st, outs))
    lines = [".PHONY: all", "all: " + " ".join(outs[0] for _, outs in rules), ""]
    for st, outs in rules:
        deps = [produced[str(Path(d.fs_path).relative_to(root))] for d in st.deps
                if str(Path(d.fs_path).relative_to(root)) in produced]
        lines += [f"{outs[0]}: {' '.join(deps)}",
                  f"\t@mkdir -p logs; s=$$(date +%s%N); {st.cmd} > logs/{st.name}.log 2>&1; rc=$$?; "
                  f"echo \"$$rc\t$$(( ($$(date +%s%N) - s) / 1000000 ))\t{st.name}\" >> times.tsv; exit $$rc", ""]
    Path(args.makefile).write_text("\n".join(lines))
    print(f"{len(rules)} stages -> {args.makefile}")


if __name__ == "__main__":
    main()
