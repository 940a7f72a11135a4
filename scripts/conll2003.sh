#!/usr/bin/env bash
# CoNLL-2003 recipe (MiniLM): NER on train.txt, validated on valid.txt as given (eng.testa, other Reuters
# documents; scripts/carve_splits.py counts the boilerplate sentences it shares with train). Entity
# precision / recall / F1 of the best weights: OUT/metrics.json.
#   scripts/conll2003.sh [more lightft train flags]      (env: scripts/recipe_env.sh; OUT=<run folder>)
source "$(dirname "$0")/recipe_env.sh"
OUT=${OUT:-runs/conll2003-seed$SEED}
guard_out "$OUT"
S=$(split_dir conll2003)
python -m lightft train ner --config scripts/conll2003-full.toml --model "$MINILM" --train "$S/train.txt" \
  --val "$S/valid.txt" --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@"
