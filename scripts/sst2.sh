#!/usr/bin/env bash
# SST-2 recipe: fine-tune MiniLM on ../shared/data/sst2 (full by default, `lora` as first argument for LoRA),
# then evaluate the best weights on the validation split. Extra arguments are passed to `lightft train`.
#   scripts/sst2.sh [full|lora] [--threads 2 ...]      (env: MODEL=<model dir or name>, OUT=<run folder>)
# An existing OUT is never replaced silently: OVERWRITE=1 replaces it (and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}; shift || true
MODEL=${MODEL:-minilm}
OUT=${OUT:-runs/sst2-$MODE}
REPLACE=()
if [[ -e "$OUT" ]]; then
  CREATED=$(grep -m1 -o '"created": *"[^"]*"' "$OUT/run.json" 2>/dev/null | grep -o '[0-9T:-]\{19\}' || echo "unknown date")
  if [[ "${OVERWRITE:-0}" != 1 ]]; then
    echo "scripts/sst2.sh: $OUT already exists (run created $CREATED); OVERWRITE=1 scripts/sst2.sh $MODE replaces it, OUT=other/folder keeps it" >&2
    exit 1
  fi
  echo "scripts/sst2.sh: replacing $OUT (run created $CREATED), as OVERWRITE=1 asks" >&2
  REPLACE=(--overwrite)
fi
python -m lightft train classify --config "scripts/sst2-$MODE.toml" --model "$MODEL" --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} "$@"
python -m lightft eval classify --model "$OUT" --data ../shared/data/sst2/validation.jsonl --metrics-out "$OUT/eval.json"
