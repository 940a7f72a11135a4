#!/usr/bin/env bash
# Transfer recipe (MiniLM): [MLM on medical abstracts ->] SQuAD -> BioASQ, each stage starting from the previous
# run's weights (--init), settings in scripts/qa-*.toml and scripts/mlm-medical.toml. Honest splits: SQuAD's
# validation is a whole article train lacks; BioASQ is carved by whole question groups (no question text or
# snippet shared); MLM reads the abstracts' carved train part only. Final metrics: OUT/bioasq/metrics.json.
#   scripts/qa_transfer.sh [more lightft train flags for every stage]
#   MLM=1 scripts/qa_transfer.sh ...        (env: scripts/recipe_env.sh; OUT=<folder of the stages' runs>)
source "$(dirname "$0")/recipe_env.sh"
OUT=${OUT:-runs/qa-transfer$([[ ${MLM:-0} == 1 ]] && echo -mlm || true)-seed$SEED}
guard_out "$OUT"
SQ=$(split_dir squad); BQ=$(split_dir bioasq)
COMMON=(${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@")
INIT=()
if [[ ${MLM:-0} == 1 ]]; then
  MED=$(split_dir medical_abstracts)
  python -m lightft train mlm --config scripts/mlm-medical.toml --model "$MINILM" --train "$MED/train.txt" \
    --val "$MED/validation.txt" --out "$OUT/mlm" "${COMMON[@]}"
  INIT=(--init "$OUT/mlm")
fi
python -m lightft train qa --config scripts/qa-squad.toml --model "$MINILM" ${INIT[@]+"${INIT[@]}"} --train "$SQ/train.json" \
  --val "$SQ/validation.json" --out "$OUT/squad" "${COMMON[@]}"
python -m lightft train qa --config scripts/qa-bioasq.toml --model "$MINILM" --init "$OUT/squad" \
  --train "$BQ/train.json" --val "$BQ/validation.json" --out "$OUT/bioasq" "${COMMON[@]}"
