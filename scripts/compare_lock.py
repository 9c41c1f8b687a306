"""Which pipeline outputs a re-run reproduced byte for byte: the md5 of every output in dvc.lock against the
same output in another revision's dvc.lock (default: the last commit's).

    python scripts/compare_lock.py [--rev REV] [--stages PATTERN]

Result files, generation folders (generate_metrics.json) and the tables record wall-clock seconds, so they
differ between any two runs; training sets, raw texts and accuracies should not.
"""

import argparse
import fnmatch
import subprocess
import sys

import yaml


def outs(lock: dict, pattern: str) -> dict[str, str]:
    return {o["path"]: o.get("md5") for name, stage in lock["stages"].items() if fnmatch.fnmatch(name, pattern)
            for o in stage.get("outs", [])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="HEAD", help="the git revision whose dvc.lock is the reference")
    p.add_argument("--stages", default="*", help="stage names to compare (a glob, e.g. 'filter@*')")
    args = p.parse_args()
    try:
        old = yaml.safe_load(subprocess.run(["git", "show", f"{args.rev}:dvc.lock"], check=True, capture_output=True,
                                            text=True).stdout)
    except subprocess.CalledProcessError as err:
        print(f"compare_lock: no dvc.lock at {args.rev}: {err.stderr.strip()}", file=sys.stderr)
        return 2
    with open("dvc.lock") as f:
        new = yaml.safe_load(f)
    a, b = outs(old, args.stages), outs(new, args.stages)
    common = sorted(set(a) & set(b))
    differ = [path for path in common if a[path] != b[path]]
    print(f"{len(common) - len(differ)} of {len(common)} outputs identical to {args.rev}'s dvc.lock")
    for path in differ:
        print(f"  differs: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
