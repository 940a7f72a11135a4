#!/usr/bin/env bash
# Launch `lightft train` on one or several machines with torchrun (one process per GPU).
#
# One machine, all its GPUs (Lightning can also start the processes itself: plain
# `lightft train ... --devices 4 --strategy ddp` needs no launcher):
#   GPUS=4 scripts/launch_torchrun.sh classify --model MODEL --train TRAIN --out RUN
# Two machines: run this on each, with the same MASTER_ADDR (first machine) and its own NODE_RANK:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 GPUS=4 scripts/launch_torchrun.sh classify ...
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 GPUS=4 scripts/launch_torchrun.sh classify ...
# --out must be on a file system every machine sees (global rank 0 writes it; --resume reads it everywhere).
set -euo pipefail
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
STRATEGY=${STRATEGY:-ddp}   # ddp | fsdp (one FSDP unit per transformer block)

exec torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$GPUS" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    -m lightft train "$@" --accelerator gpu --devices "$GPUS" --num-nodes "$NNODES" --strategy "$STRATEGY"
