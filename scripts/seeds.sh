#!/usr/bin/env bash
# Run a recipe once per seed and report mean ± std (sample std) of every number in its metrics file.
#   scripts/seeds.sh "1 2 3" scripts/sst2.sh full [flags]
#   METRICS=bioasq/metrics.json scripts/seeds.sh "1 2 3" scripts/qa_transfer.sh
# Each seed runs with SEED=N OUT=$ROOT/seedN (ROOT default runs/seeds/<recipe name>); METRICS is the file,
# relative to OUT, that holds the recipe's result (default metrics.json). The summary: $ROOT/summary.json.
set -euo pipefail
SEEDS=${1:?usage: seeds.sh "SEEDS" RECIPE [ARGS]}; shift
RECIPE=${1:?usage: seeds.sh "SEEDS" RECIPE [ARGS]}
ROOT=${ROOT:-runs/seeds/$(basename "$RECIPE" .sh)${2:+-$2}}
METRICS=${METRICS:-metrics.json}
files=()
for s in $SEEDS; do
  SEED=$s OUT="$ROOT/seed$s" "$@"
  files+=("$ROOT/seed$s/$METRICS")
done
python - "$ROOT/summary.json" "${files[@]}" <<'PY'
import json, statistics, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
summary = {"runs": sys.argv[2:]}
for k in keys:
    vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
    summary[k] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "values": vals}
    print(f"{k}: {summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}  ({', '.join(f'{v:.4f}' for v in vals)})")
json.dump(summary, open(sys.argv[1], "w"), indent=2)
PY
