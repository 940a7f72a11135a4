#!/usr/bin/env bash
# SST-2 recipe: fine-tune on the honest split (1,000 whole sentences held out, every phrase of them removed from
# train: scripts/carve_splits.py), keep the best weights; their validation metrics are OUT/metrics.json.
# Settings and budget: scripts/sst2-full.toml (default: MiniLM, full), scripts/sst2-lora.toml (MiniLM, LoRA) or
# scripts/sst2-smollm2.toml (SmolLM2-135M + LoRA, the most accurate; about 4x the time of full).
#   scripts/sst2.sh [full|lora|smollm2] [more lightft train flags]   (env: scripts/recipe_env.sh; OUT=<run folder>)
# An existing OUT is never replaced silently: OVERWRITE=1 replaces it (and says so).
MODE=${1:-full}; [[ $# -gt 0 ]] && shift
source "$(dirname "$0")/recipe_env.sh"
OUT=${OUT:-runs/sst2-$MODE-seed$SEED}
guard_out "$OUT" "$MODE"
S=$(split_dir sst2)
MODEL=$MINILM; [[ $MODE == smollm2 ]] && MODEL=$SMOLLM2
python -m lightft train classify --config "scripts/sst2-$MODE.toml" --model "$MODEL" --train "$S/train.jsonl" \
  --val "$S/validation.jsonl" --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" \
  ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@"
