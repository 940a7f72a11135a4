#!/usr/bin/env bash
# Sourced by every recipe script: the honest splits, the packaged models, CPU-dependent precision.
# Leaves the shell in the repository root. Environment (all optional):
#   DATA        the shared data folder (default ../shared/data)
#   SPLITS      where the carved splits live (default runs/splits); each data set is carved on first use
#               with scripts/carve_splits.py (seed CARVE_SEED, default 0) and reused afterwards
#   SEED        training seed (default 42); scripts/seeds.sh runs a recipe for several
#   THREADS     torch CPU threads (default: all cores)
#   MINILM, SMOLLM2  encoder / decoder: a folder or a model name (default minilm, smollm2: `lightft models`)
#   OVERWRITE   1 = replace an existing OUT (default: refuse)
set -euo pipefail
RECIPE=$(realpath "${BASH_SOURCE[1]:-$0}")  # the recipe script, named relative to the repository in messages
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECIPE=$(realpath --relative-to="$PWD" "$RECIPE")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-$PWD/../shared/data}
SPLITS=${SPLITS:-$PWD/runs/splits}
CARVE_SEED=${CARVE_SEED:-0}
SEED=${SEED:-42}
THREADS=${THREADS:-$(nproc)}

# The carved split of a data set, carved now unless it is there with the same seed.
split_dir() {
  if ! python - "$SPLITS/$1/manifest.json" "$CARVE_SEED" <<'PY' 2>/dev/null; then
import json, sys
sys.exit(json.load(open(sys.argv[1]))["seed"] != int(sys.argv[2]))
PY
    python scripts/carve_splits.py "$1" --out "$SPLITS" --seed "$CARVE_SEED" --data "$DATA" >&2
  fi
  echo "$SPLITS/$1"
}

# bf16 only where the CPU multiplies it natively (AMX); elsewhere it is emulated and slower than fp32.
if grep -q amx_bf16 /proc/cpuinfo 2>/dev/null; then HAS_AMX=1; else HAS_AMX=0; fi
ENCODER_PRECISION=()   # full fine-tuning of MiniLM: lightft's --precision auto (bf16 autocast over fp32 weights
                       # on these CPUs, fp32 elsewhere); kept as a hook for a recipe run with other flags
DECODER_PRECISION=()   # SmolLM2 + LoRA: bf16 weights and adapters (what benchmarks/RESULTS.md measured)
INFER_DTYPE=()         # generation and few-shot: bf16 weights packed for oneDNN
if [[ $HAS_AMX == 1 ]]; then
  DECODER_PRECISION=(--precision bf16-true)
  INFER_DTYPE=(--dtype bfloat16)
fi

# A value of a recipe's TOML (for the eval commands, which take no --config): toml_get FILE KEY
toml_get() { python -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]])' "$1" "$2"; }
BASE=${BASE:-$PWD/runs/base}  # base-model figures, measured once and reused by every seed

MINILM=${MINILM:-minilm}     # named models (`lightft models`): the packaged MiniLM folder, and SmolLM2
SMOLLM2=${SMOLLM2:-smollm2}  # converted once from its GGUF into $LIGHTFT_CACHE/models/smollm2

# An existing run folder is never replaced silently: guard_out OUT [ARGS] stops, naming the run, unless
# OVERWRITE=1, and then sets REPLACE=(--overwrite) for the lightft commands. ARGS: the recipe's own
# arguments, repeated in the message.
guard_out() {
  REPLACE=()
  if [[ -e "$1" ]]; then
    local created
    created=$(grep -m1 -o '"created": *"[^"]*"' "$1/run.json" 2>/dev/null | grep -o '[0-9T:-]\{19\}' || true)
    created=${created:+ (run created $created)}
    if [[ "${OVERWRITE:-0}" != 1 ]]; then
      echo "$RECIPE: $1 already exists$created; OVERWRITE=1 $RECIPE${2:+ $2} replaces it, OUT=other/folder keeps it" >&2
      exit 1
    fi
    echo "$RECIPE: replacing $1$created, as OVERWRITE=1 asks" >&2
    REPLACE=(--overwrite)
  fi
}
