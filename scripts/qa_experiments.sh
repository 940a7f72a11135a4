#!/usr/bin/env bash
# The README's BioASQ table: BioASQ-only, SQuAD-only (zero-shot), SQuAD -> BioASQ, MLM -> SQuAD -> BioASQ,
# each with the same per-stage budgets (see qa_transfer.sh for the variables), then one Markdown table.
#   scripts/qa_experiments.sh MODEL_DIR OUT_DIR
set -euo pipefail
MODEL=${1:?usage: qa_experiments.sh MODEL_DIR OUT_DIR}
OUT=${2:?usage: qa_experiments.sh MODEL_DIR OUT_DIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$HERE/../shared/data}
mkdir -p "$OUT"
"$HERE/scripts/qa_transfer.sh" "$MODEL" "$OUT/transfer"
python -m lightft eval qa --model "$OUT/transfer/squad" --data "$DATA/bioasq/validation.json" --no-progress \
  > "$OUT/zero_shot.json"
COMMON="--full --batch-size ${BATCH:-16} --lr ${LR:-1e-4} --epochs 1 --no-progress --overwrite ${EXTRA:-}"
python -m lightft train qa --model "$MODEL" --train "$DATA/bioasq/train.json" --val "$DATA/bioasq/validation.json" \
  --max-length 128 --doc-stride 32 --max-steps "${BIOASQ_STEPS:-40}" $COMMON --out "$OUT/bioasq_only" > "$OUT/bioasq_only.json"
MLM=1 "$HERE/scripts/qa_transfer.sh" "$MODEL" "$OUT/mlm_transfer"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def row(name, file):
    m = json.loads((out / file).read_text())
    get = lambda k: m.get(k, m.get("val_" + k))
    return f"| {name} | {get('exact_match'):.1f} | {get('f1'):.1f} | {get('strict_acc'):.3f} | {get('lenient_acc'):.3f} | {get('mrr'):.3f} |"
squad = json.loads((out / "transfer/squad.json").read_text())
print(f"SQuAD validation: EM {squad['val_exact_match']:.1f} F1 {squad['val_f1']:.1f}")
print("| BioASQ validation | EM | F1 | strict | lenient | MRR |\n|---|---|---|---|---|---|")
for name, file in [("BioASQ only", "bioasq_only.json"), ("SQuAD only (zero-shot)", "zero_shot.json"),
                   ("SQuAD -> BioASQ", "transfer/bioasq.json"), ("MLM -> SQuAD -> BioASQ", "mlm_transfer/bioasq.json")]:
    print(row(name, file))
PY
