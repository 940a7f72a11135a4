#!/usr/bin/env bash
# Domain-adaptive pretraining (task lm) of SmolLM2 + LoRA on medical abstracts: held-out perplexity before/after.
# Usage: scripts/decoder/medical_lm.sh   (env: STEPS=8 LIMIT_VAL=40 WORK=/tmp/lightft-medical MODEL=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/decoder/smollm2.sh
WORK=${WORK:-/tmp/lightft-medical}
mkdir -p "$WORK"
DATA=../shared/data/medical_abstracts/train.txt          # one abstract per line
head -n -250 "$DATA" > "$WORK/train.txt"                  # carve: the last 250 abstracts are held out
tail -n 250 "$DATA" > "$WORK/heldout.txt"
DATAOPTS=(--doc-per-line --max-length 256 --limit-val "${LIMIT_VAL:-40}" --no-progress)
python -m lightft eval lm --model "$MODEL" --data "$WORK/heldout.txt" "${DATAOPTS[@]}" | tee "$WORK/base.json"
python -m lightft train lm --model "$MODEL" --train "$WORK/train.txt" --out "$WORK/run" --overwrite "${DATAOPTS[@]}" \
  --val-fraction 0.02 --max-steps "${STEPS:-8}" --batch-size 2 --lr 1e-3 --lora-targets all-linear --threads 2 \
  --val-every "${STEPS:-8}"
python -m lightft eval lm --model "$WORK/run" --data "$WORK/heldout.txt" "${DATAOPTS[@]}" | tee "$WORK/tuned.json"
