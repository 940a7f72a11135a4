#!/usr/bin/env bash
# The BioASQ comparison at one seed: BioASQ only, SQuAD only (zero-shot), SQuAD -> BioASQ, MLM -> SQuAD -> BioASQ,
# every stage with its recipe's budget (scripts/qa-*.toml, scripts/mlm-medical.toml), then one Markdown table.
#   scripts/qa_experiments.sh [more lightft train flags]    (env: scripts/recipe_env.sh; OUT=<folder>)
source "$(dirname "$0")/recipe_env.sh"
OUT=${OUT:-runs/qa-experiments-seed$SEED}
guard_out "$OUT"
BQ=$(split_dir bioasq)
OUT="$OUT/transfer" scripts/qa_transfer.sh "$@"
MLM=1 OUT="$OUT/mlm_transfer" scripts/qa_transfer.sh "$@"
python -m lightft eval qa --model "$OUT/transfer/squad" --data "$BQ/validation.json" --no-progress \
  --metrics-out "$OUT/zero_shot.json" > /dev/null
python -m lightft train qa --config scripts/qa-bioasq.toml --model "$MINILM" --train "$BQ/train.json" \
  --val "$BQ/validation.json" --out "$OUT/bioasq_only" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" \
  ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@" > /dev/null
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def row(name, file):
    m = json.loads((out / file).read_text())
    get = lambda k: m.get(k, m.get("val_" + k))
    return f"| {name} | {get('exact_match'):.1f} | {get('f1'):.1f} | {get('strict_acc'):.3f} | {get('lenient_acc'):.3f} | {get('mrr'):.3f} |"
squad = json.loads((out / "transfer/squad/metrics.json").read_text())
print(f"SQuAD validation: EM {squad['val_exact_match']:.1f} F1 {squad['val_f1']:.1f}")
print("| BioASQ validation (carved) | EM | F1 | strict | lenient | MRR |\n|---|---|---|---|---|---|")
for name, file in [("BioASQ only", "bioasq_only/metrics.json"), ("SQuAD only (zero-shot)", "zero_shot.json"),
                   ("SQuAD -> BioASQ", "transfer/bioasq/metrics.json"),
                   ("MLM -> SQuAD -> BioASQ", "mlm_transfer/bioasq/metrics.json")]:
    print(row(name, file))
PY
