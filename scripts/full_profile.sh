#!/usr/bin/env bash
# The full profile (profiles/full.yaml; hours on CPU), resumable: bash scripts/full_profile.sh [RUN_DIR] (default
# studies/full-profile; JOBS=2 stages at a time, one thread each; MACHINE labels the runtimes). It leaves params.yaml (the quick profile) alone:
#   1. RUN_DIR/params.yaml = params.yaml + profiles/full.yaml (kept when it exists: a resumed run keeps its settings)
#   2. RUN_DIR/Makefile: the pipeline's own stage commands (dvc.yaml under those params), what is not done yet
#   3. make -k: each stage's exit code and wall time go to RUN_DIR/times.tsv, its output to RUN_DIR/logs/
#   4. notebook 01 on RUN_DIR's results -> reports/full/{tables,figures}, with the stage runtime table
# Stopping it at any point loses at most the stages in flight (a generation resumes from its checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN_DIR=${1:-studies/full-profile}
JOBS=${JOBS:-2}
mkdir -p "$RUN_DIR" reports/executed
if [ ! -f "$RUN_DIR/params.yaml" ]; then
  cp params.yaml "$RUN_DIR/params.yaml"
  gradmm profile full --params "$RUN_DIR/params.yaml"
fi
python scripts/full_makefile.py "$RUN_DIR/params.yaml" "$RUN_DIR"
# Label this call's lines in times.tsv (gradmm.reporting.runtimes reads the label): other sessions may have run on a GPU.
echo "# machine: ${MACHINE:-CPU, $(nproc) cores, $JOBS stages at a time}" >> "$RUN_DIR/times.tsv"
(cd "$RUN_DIR" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 make -k -j "$JOBS" all) \
  || echo "full_profile.sh: some stages failed; see $RUN_DIR/times.tsv and $RUN_DIR/logs/" >&2
papermill notebooks/01_classification.ipynb reports/executed/01_classification_full.ipynb --no-progress-bar \
  -p params_file "$RUN_DIR/params.yaml" -p runs_dir "$RUN_DIR/runs" -p reports_dir reports/full -p profile full \
  -p stage_times "$RUN_DIR/times.tsv"
cat reports/full/tables/classification.md
