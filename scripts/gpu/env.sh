# Sourced on the GPU machine (no network) by stage1.sh / stage2.sh: the carried wheels and model, our code.
export PYTHONPATH="$PWD:/tmp/site:/tmp/pkg" GRADMM_CACHE=/tmp/gradmm-cache GRADMM_DATA_DIR="$PWD/.gpu/data"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1
mkdir -p /tmp/bin
printf '#!/bin/sh\nexec python3 -m gradmm.cli "$@"\n' > /tmp/bin/gradmm && chmod +x /tmp/bin/gradmm
export PATH="/tmp/bin:$PATH"
