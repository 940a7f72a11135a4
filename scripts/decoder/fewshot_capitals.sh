#!/usr/bin/env bash
# Few-shot recipe: SmolLM2 on the capitals / currencies evaluation pool, demonstrations only from the
# demonstration pool (no country in both: scripts/carve_splits.py). Settings: scripts/decoder/fewshot-capitals.toml
# (k, seeds = demonstration draws, selection, template). OUT/metrics.json: accuracy mean ± std per k;
# OUT/predictions.jsonl: every prompt, answer and verdict.
#   scripts/decoder/fewshot_capitals.sh [more lightft fewshot flags]   (env: scripts/recipe_env.sh; OUT=<folder>)
source "$(dirname "$0")/../recipe_env.sh"
CQ=$(split_dir capitals_qa); MODEL=$SMOLLM2
OUT=${OUT:-runs/fewshot-capitals-seed$SEED}
guard_out "$OUT"
mkdir -p "$OUT"
python -m lightft fewshot --config scripts/decoder/fewshot-capitals.toml --model "$MODEL" --data "$CQ/validation.jsonl" \
  --pool "$CQ/train.jsonl" --seed "$SEED" --threads "$THREADS" ${INFER_DTYPE[@]+"${INFER_DTYPE[@]}"} --metrics-out "$OUT/metrics.json" \
  --predictions-out "$OUT/predictions.jsonl" "$@"
