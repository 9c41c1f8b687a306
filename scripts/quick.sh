#!/usr/bin/env bash
# The quick pipeline (the README's main job): `dvc repro`, then the accuracy table.
# rtpolarity needs the paper's data directory (../shared/data, GRADMM_DATA_DIR or data.data_dir); without
# one, the pipeline runs on the PyPI tweets set only, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
if python -c "import sys, yaml; from gradmm.io.paths import data_dir; \
d = data_dir(yaml.safe_load(open('params.yaml'))['data'].get('data_dir')); \
sys.exit(0 if d and (d / 'rtpolarity').is_dir() else 1)"; then
  dvc repro report  # the classification experiment; `dvc repro study_report` is the variants study
else
  echo "quick.sh: no data directory with rtpolarity/ (set GRADMM_DATA_DIR): running on tweets only" >&2
  dvc exp run report -S 'experiment.datasets=[tweets]'
fi
cat reports/tables/classification.md
