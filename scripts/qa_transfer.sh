#!/usr/bin/env bash
# The transfer chain as one command: [MLM on domain text ->] SQuAD -> BioASQ, then BioASQ validation metrics.
#
#   scripts/qa_transfer.sh MODEL_DIR OUT_DIR            # SQuAD -> BioASQ
#   MLM=1 scripts/qa_transfer.sh MODEL_DIR OUT_DIR      # medical abstracts MLM -> SQuAD -> BioASQ
#
# Each stage starts from the previous run's weights with --init (an mlm run gives only its backbone).
# Budgets and data are environment variables (defaults: the shared data sets, CPU-sized budgets):
#   SQUAD_STEPS BIOASQ_STEPS MLM_STEPS BATCH LR EXTRA (more flags for every stage, e.g. "--threads 2")
set -euo pipefail
MODEL=${1:?usage: qa_transfer.sh MODEL_DIR OUT_DIR}
OUT=${2:?usage: qa_transfer.sh MODEL_DIR OUT_DIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$HERE/../shared/data}
SQUAD_STEPS=${SQUAD_STEPS:-40} BIOASQ_STEPS=${BIOASQ_STEPS:-40} MLM_STEPS=${MLM_STEPS:-40}
BATCH=${BATCH:-16} LR=${LR:-1e-4} EXTRA=${EXTRA:-}
COMMON="--full --batch-size $BATCH --lr $LR --epochs 1 --no-progress --overwrite $EXTRA"
mkdir -p "$OUT"
INIT=()
if [[ "${MLM:-0}" == 1 ]]; then
  python -m lightft train mlm --model "$MODEL" --train "$DATA/medical_abstracts/train.txt" --val-fraction 0.05 \
    --max-length 128 --max-steps "$MLM_STEPS" --whole-word-mask $COMMON --out "$OUT/mlm" > "$OUT/mlm.json"
  INIT=(--init "$OUT/mlm")
fi
python -m lightft train qa --model "$MODEL" "${INIT[@]}" --train "$DATA/squad/train.json" --val "$DATA/squad/validation.json" \
  --max-length 192 --doc-stride 64 --max-steps "$SQUAD_STEPS" $COMMON --out "$OUT/squad" > "$OUT/squad.json"
python -m lightft train qa --model "$MODEL" --init "$OUT/squad" --train "$DATA/bioasq/train.json" --val "$DATA/bioasq/validation.json" \
  --max-length 128 --doc-stride 32 --max-steps "$BIOASQ_STEPS" $COMMON --out "$OUT/bioasq" > "$OUT/bioasq.json"
cat "$OUT/bioasq.json"
