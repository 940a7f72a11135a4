#!/usr/bin/env bash
# Instruction tuning (task instruct) of SmolLM2 + LoRA on Alpaca: response-only validation loss before/after,
# and generations before/after. Usage: scripts/decoder/alpaca_instruct.sh  (env: STEPS=8 LIMIT_VAL=40 WORK=... MODEL=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/decoder/smollm2.sh
WORK=${WORK:-/tmp/lightft-alpaca}
mkdir -p "$WORK"
DATA=../shared/data/alpaca
DATAOPTS=(--max-length 256 --limit-val "${LIMIT_VAL:-40}" --no-progress)
PROMPTS=(--prompt "Give three tips for staying healthy." --prompt "Translate 'good morning' into French."
         --prompt "Write a haiku about the sea.")
python -m lightft eval instruct --model "$MODEL" --data "$DATA/validation.json" "${DATAOPTS[@]}" | tee "$WORK/base.json"
python -m lightft generate --model "$MODEL" "${PROMPTS[@]}" --max-new-tokens 80 --jsonl | tee "$WORK/base_gen.jsonl"
python -m lightft train instruct --model "$MODEL" --train "$DATA/train.json" --val "$DATA/validation.json" \
  --out "$WORK/run" --overwrite "${DATAOPTS[@]}" --packing --max-steps "${STEPS:-8}" --batch-size 2 --lr 5e-4 \
  --lora-targets all-linear --threads 2 --val-every "${STEPS:-8}"
python -m lightft eval instruct --model "$WORK/run" --data "$DATA/validation.json" "${DATAOPTS[@]}" | tee "$WORK/tuned.json"
python -m lightft generate --model "$WORK/run" "${PROMPTS[@]}" --max-new-tokens 80 --jsonl | tee "$WORK/tuned_gen.jsonl"
