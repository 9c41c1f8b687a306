#!/usr/bin/env bash
# The README's main job: the quick pipeline re-run from scratch in a scratch copy of the project (.quick/), then
# its table compared run by run with the committed one. The committed results (runs/, reports/, dvc.lock) are
# left alone: in the project itself they are DVC outputs, and `dvc repro` there is a no-op until something changes.
# rtpolarity needs the paper's data directory (../shared/data, GRADMM_DATA_DIR or data.data_dir); without one, the
# re-run covers the PyPI tweets set only, and says so.
# `--set section.key=value` (repeatable) changes the copy's params.yaml, e.g. `--set model.dtype=bfloat16` for the
# fast path; the committed table it is compared with stays the fp32 one.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export PATH="$root/.venv/bin:$PATH"
scratch="$root/.quick"

overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --set) [ $# -ge 2 ] || { echo "quick.sh: --set needs section.key=value" >&2; exit 2; }
           overrides+=("$2"); shift 2 ;;
    *) echo "quick.sh: unknown argument '$1'; allowed: --set section.key=value (repeatable)" >&2; exit 2 ;;
  esac
done
# a bad override fails here, before the copy and the run (the same check as `gradmm <cmd> --set`)
if ! err=$(python -c "import sys; from gradmm.config import parse_overrides; parse_overrides(sys.argv[1:])" \
    ${overrides[@]+"${overrides[@]}"} 2>&1); then
  echo "quick.sh: ${err##*$'\n'}" >&2
  exit 2
fi

# the data directory as this checkout resolves it (../shared/data beside it, GRADMM_DATA_DIR or data.data_dir),
# passed on: the copy's own ../shared would be another folder
data=$(python -c "import yaml; from gradmm.io.paths import data_dir; \
d = data_dir(yaml.safe_load(open('params.yaml'))['data'].get('data_dir')); print(d.resolve() if d else '')")

rm -rf "$scratch" && mkdir -p "$scratch"
# the project's code, params and pipeline, without the results the re-run makes (and without the environment)
tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./.quick --exclude=./runs --exclude=./reports \
  --exclude=./studies --exclude=./mlflow.db --exclude=./mlartifacts --exclude=./.dvc/cache --exclude=./.dvc/tmp \
  --exclude=__pycache__ -cf - . | tar -C "$scratch" -xf -
cd "$scratch"
dvc config --local core.no_scm true  # a scratch copy, not a git repository of its own

if [ -n "$data" ] && [ -d "$data/rtpolarity" ]; then
  export GRADMM_DATA_DIR="$data"
else
  echo "quick.sh: no data directory with rtpolarity/ (set GRADMM_DATA_DIR): re-running on tweets only" >&2
  python -c "from ruamel.yaml import YAML; y = YAML(); p = y.load(open('params.yaml')); \
p['experiment']['datasets'] = ['tweets']; y.dump(p, open('params.yaml', 'w'))"
fi
if [ ${#overrides[@]} -gt 0 ]; then
  python - "${overrides[@]}" <<'PY'
import sys
from ruamel.yaml import YAML
from gradmm.config import parse_overrides
y = YAML()
params = y.load(open("params.yaml"))
for section, values in parse_overrides(sys.argv[1:]).items():
    params[section].update(values)
y.dump(params, open("params.yaml", "w"))
print("quick.sh: params changed:", ", ".join(sys.argv[1:]), file=sys.stderr)
PY
fi
dvc repro report  # the classification experiment; `dvc repro study_report` is the variants study

cat reports/tables/classification.md
echo
echo "quick.sh: this re-run's table is $scratch/reports/tables/classification.md; against the committed one:"
gradmm compare-results "$root/reports/tables/classification.csv" reports/tables/classification.csv
