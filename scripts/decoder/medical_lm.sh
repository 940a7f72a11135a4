#!/usr/bin/env bash
# Domain-adaptive pretraining recipe (task lm): SmolLM2, fully fine-tuned on the medical abstracts' carved train part,
# perplexity on the held-out whole abstracts (scripts/carve_splits.py) before (BASE/medical-lm.json, measured
# once) and after (OUT/metrics.json). Settings and budget: scripts/decoder/medical-lm.toml.
#   scripts/decoder/medical_lm.sh [more lightft train flags]     (env: scripts/recipe_env.sh; OUT=<run folder>)
source "$(dirname "$0")/../recipe_env.sh"
TOML=scripts/decoder/medical-lm.toml
MED=$(split_dir medical_abstracts); MODEL=$SMOLLM2
OUT=${OUT:-runs/medical-lm-seed$SEED}
guard_out "$OUT"
mkdir -p "$BASE"
if [[ ! -f "$BASE/medical-lm.json" ]]; then
  python -m lightft eval lm --model "$MODEL" --data "$MED/validation.txt" --doc-per-line \
    --max-length "$(toml_get $TOML max_length)" --no-progress ${INFER_DTYPE[@]+"${INFER_DTYPE[@]}"} --metrics-out "$BASE/medical-lm.json"
fi
python -m lightft train lm --config $TOML --model "$MODEL" --train "$MED/train.txt" --val "$MED/validation.txt" \
  --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" "$@"
# (no DECODER_PRECISION: every weight trains, so lightft's --precision auto keeps fp32 weights under bf16
# autocast where the CPU has it; bf16-true would round the updates away: see lightft/precision.py)
python - "$BASE/medical-lm.json" "$OUT/metrics.json" <<'PY'
import json, sys
base, after = (json.load(open(f)) for f in sys.argv[1:])
change = 100 * (after["val_perplexity"] / base["perplexity"] - 1)
print(f"held-out perplexity {base['perplexity']:.2f} -> {after['val_perplexity']:.2f} ({change:+.1f} %)")
PY
