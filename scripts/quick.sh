#!/usr/bin/env bash
# The README's main job: the quick pipeline re-run from scratch in a scratch copy of the project (.quick/), then
# its table compared run by run with the committed one. The committed results (runs/, reports/, dvc.lock) are
# left alone: in the project itself they are DVC outputs, and `dvc repro` there is a no-op until something changes.
# rtpolarity needs the paper's data directory (../shared/data, GRADMM_DATA_DIR or data.data_dir); without one, the
# re-run covers the PyPI tweets set only, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
export PATH="$root/.venv/bin:$PATH"
scratch="$root/.quick"

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
dvc repro report  # the classification experiment; `dvc repro study_report` is the variants study

cat reports/tables/classification.md
echo
echo "quick.sh: this re-run's table is $scratch/reports/tables/classification.md; against the committed one:"
gradmm compare-results "$root/reports/tables/classification.csv" reports/tables/classification.csv
