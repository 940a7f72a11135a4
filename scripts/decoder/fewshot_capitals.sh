#!/usr/bin/env bash
# Few-shot prompting of SmolLM2 on capitals and currencies: 0/1/3/5-shot accuracy, mean ± std over 5 seeds.
# Usage: scripts/decoder/fewshot_capitals.sh  (env: LIMIT=24 MODEL=...; LIMIT= (empty) for all 288 items)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/decoder/smollm2.sh
LIMIT=${LIMIT-24}
python -m lightft fewshot --model "$MODEL" --data ../shared/data/capitals_qa/train.jsonl --shots 0,1,3,5 --seeds 5 \
  ${LIMIT:+--limit "$LIMIT"} --max-new-tokens 10 --threads 2
