#!/usr/bin/env bash
# SST-2 recipe: fine-tune on the honest split (1,000 whole sentences held out, every phrase of them removed from
# train: scripts/carve_splits.py), keep the best weights; their validation metrics are OUT/metrics.json.
# Settings and budget: scripts/sst2-full.toml (default: MiniLM, full), scripts/sst2-lora.toml (MiniLM, LoRA),
# scripts/sst2-smollm2.toml (SmolLM2-135M + LoRA; about 4x the time of full) or scripts/sst2-distill.toml
# (MiniLM distilled from three MiniLM teachers: full runs of seeds 100 x SEED + 1..3, trained first into
# OUT.teachers/; about 4x the time of full, one MiniLM-sized model at the end).
# `ensemble`: the smollm2 and full recipes, both of seed SEED, trained into OUT/smollm2 and OUT/minilm, then
# scored together (`lightft eval classify --model A,B`: their probabilities averaged) into OUT/metrics.json;
# about 4.5x the time of full (619-687 s for the whole script, idle 2-core EPYC), and both models at inference.
#   scripts/sst2.sh [full|lora|smollm2|distill|ensemble] [more lightft train flags]
#   (env: scripts/recipe_env.sh; OUT=<run folder>)
# An existing OUT is never replaced silently: OVERWRITE=1 replaces it (and says so).
MODE=${1:-full}; [[ $# -gt 0 ]] && shift
source "$(dirname "$0")/recipe_env.sh"
OUT=${OUT:-runs/sst2-$MODE-seed$SEED}
guard_out "$OUT" "$MODE"
S=$(split_dir sst2)
MODEL=$MINILM; [[ $MODE == smollm2 ]] && MODEL=$SMOLLM2
if [[ $MODE == ensemble ]]; then
  # OVERWRITE=1 replaces an ensemble folder's own parts; anything else in OUT (a run folder, say) would be mixed in
  OTHER=$(find "$OUT" -mindepth 1 -maxdepth 1 ! -name smollm2 ! -name minilm ! -name metrics.json -print -quit \
    2>/dev/null || true)
  if [[ -n $OTHER ]]; then
    echo "$RECIPE: $OUT holds $(basename "$OTHER"), so it is not an ensemble folder (smollm2/, minilm/, metrics.json);" \
      "OUT=other/folder" >&2
    exit 1
  fi
  mkdir -p "$OUT"
  rm -f "$OUT/metrics.json"  # OUT is new, or OVERWRITE=1 asked to replace it
  NAMES=(smollm2 minilm); CONFIGS=(sst2-smollm2 sst2-full); MODELS=("$SMOLLM2" "$MINILM")  # as the modes
  for i in 0 1; do                                                                        # smollm2 and full
    python -m lightft train classify --config "scripts/${CONFIGS[i]}.toml" --model "${MODELS[i]}" \
      --train "$S/train.jsonl" --val "$S/validation.jsonl" --out "$OUT/${NAMES[i]}" --overwrite --seed "$SEED" \
      --threads "$THREADS" ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@"
  done
  python -m lightft eval classify --model "$OUT/smollm2,$OUT/minilm" --data "$S/validation.jsonl" \
    --metrics-out "$OUT/metrics.json" --threads "$THREADS"
  exit 0
fi
DISTILL=()
if [[ $MODE == distill ]]; then
  TEACHER_ARGS=()  # the extra flags, less the student's own --distill-alpha / --distill-temperature
  while [[ $# -gt 0 ]]; do
    case $1 in
      --distill-*=*) DISTILL+=("$1"); shift ;;
      --distill-*) DISTILL+=("$1" "$2"); shift 2 ;;
      *) TEACHER_ARGS+=("$1"); shift ;;
    esac
  done
  set -- ${TEACHER_ARGS[@]+"${TEACHER_ARGS[@]}"}
  TEACHERS=()
  for k in 1 2 3; do
    T="$OUT.teachers/seed$((SEED * 100 + k))"
    if [[ ! -f "$T/metrics.json" ]]; then  # a finished teacher is reused (the student's OVERWRITE keeps it)
      python -m lightft train classify --config scripts/sst2-full.toml --model "$MODEL" --train "$S/train.jsonl" \
        --val "$S/validation.jsonl" --out "$T" --overwrite --seed $((SEED * 100 + k)) --threads "$THREADS" \
        ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} "$@"
    fi
    TEACHERS+=("$T")
  done
  DISTILL+=(--teachers "$(IFS=,; echo "${TEACHERS[*]}")")
fi
python -m lightft train classify --config "scripts/sst2-$MODE.toml" --model "$MODEL" --train "$S/train.jsonl" \
  --val "$S/validation.jsonl" --out "$OUT" ${REPLACE[@]+"${REPLACE[@]}"} --seed "$SEED" --threads "$THREADS" \
  ${ENCODER_PRECISION[@]+"${ENCODER_PRECISION[@]}"} ${DISTILL[@]+"${DISTILL[@]}"} "$@"
