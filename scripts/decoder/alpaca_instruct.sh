#!/usr/bin/env bash
# Instruction-tuning recipe (task instruct): SmolLM2 + LoRA on Alpaca train, judged before (BASE/alpaca-judge.json,
# measured once) and after (OUT/judge.json) by scripts/decoder/judge_instruct.py: checkable prompts passed,
# EOS rate, answer length, response-only loss / perplexity on the Alpaca validation split (OUT/metrics.json).
# Settings and budget: scripts/decoder/alpaca-instruct.toml.
#   scripts/decoder/alpaca_instruct.sh [more lightft train flags]   (env: scripts/recipe_env.sh; OUT=<run folder>)
source "$(dirname "$0")/../recipe_env.sh"
TOML=scripts/decoder/alpaca-instruct.toml
AL=$(split_dir alpaca); MODEL=$SMOLLM2
OUT=${OUT:-runs/alpaca-instruct-seed$SEED}
JUDGE=(python scripts/decoder/judge_instruct.py --threads "$THREADS" ${INFER_DTYPE[@]+"${INFER_DTYPE[@]}"})
guard_out "$OUT"
mkdir -p "$BASE"
if [[ ! -f "$BASE/alpaca-judge.json" ]]; then
  "${JUDGE[@]}" --model "$MODEL" --val "$AL/validation.json" --max-length "$(toml_get $TOML max_length)" \
    --out "$BASE/alpaca-judge.json" --answers-out "$BASE/alpaca-judge-answers.jsonl"
fi
python -m lightft train instruct --config $TOML --model "$MODEL" --train "$AL/train.json" --val "$AL/validation.json" \
  --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" ${DECODER_PRECISION[@]+"${DECODER_PRECISION[@]}"} "$@"
"${JUDGE[@]}" --model "$OUT" --out "$OUT/judge.json" --answers-out "$OUT/judge_answers.jsonl"
