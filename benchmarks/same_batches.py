"""Training-quality check behind workload (a): lightft and transformers + peft on identical batches.

    python benchmarks/same_batches.py --steps 18 --seeds 0,1

The throughput run (benchmarks/throughput.py --workload a) lets each side batch the way it normally
does (lightft: length-grouped; baseline: random order, padded), so after the same number of examples
the two have seen different examples and their validation losses differ by batch composition. Here
both sides start from the same LoRA A matrices (copied from lightft into peft; B is zero on both),
take the same batches (the baseline's random, padded ones) for `--steps` steps with the same AdamW
settings, and are scored on the same validation examples — so any gap left is implementation
numerics (bf16 kernels, hand-written backward passes), nothing else.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402
import torch  # noqa: E402


def copy_lora_a(lightft_side: throughput.LightftSide, baseline_side: throughput.BaselineSide) -> int:
    """Give peft's lora_A lightft's initial values (same layer, same projection); returns how many."""
    params = dict(baseline_side.model.named_parameters())
    copied = 0
    for name, p in lightft_side.module.named_parameters():
        match = re.search(r"layers\.(\d+)\.attn\.([qv])_proj\.lora_A", name)
        if match:
            key = f"base_model.model.model.layers.{match[1]}.self_attn.{match[2]}_proj.lora_A.default.weight"
            params[key].data.copy_(p.data)
            copied += 1
    return copied


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=1200)
    p.add_argument("--limit-val", type=int, default=64)
    cli = p.parse_args()
    torch.set_num_threads(cli.threads)
    spec = throughput.WORKLOADS["a"]
    print("| seed | steps x batch | lightft val loss | baseline val loss | difference |\n| --- | --- | ---: | ---: | ---: |")
    for seed in (int(s) for s in cli.seeds.split(",")):
        args = argparse.Namespace(limit_train=cli.limit_train, limit_val=cli.limit_val, no_group=False,
                                  compile=False, grad_checkpointing=False, seed=seed, lookahead=0, kernels="auto",
                                  baseline_group=False)
        torch.manual_seed(seed)
        ours, base = throughput.LightftSide(spec, args), throughput.BaselineSide(spec, args)
        ours.setup()
        base.setup()
        assert copy_lora_a(ours, base) == 2 * len(ours.module.backbone.layers)
        for _ in range(cli.steps):
            batch = next(base.batches)
            ours.train_step({k: v.clone() for k, v in batch.items()})
            base.train_step({k: v.clone() for k, v in batch.items()})
        a, b = ours.evaluate()["val_loss"], base.evaluate()["val_loss"]
        print(f"| {seed} | {cli.steps} x {spec['batch']} | {a:.4f} | {b:.4f} | {a - b:+.4f} |", flush=True)


if __name__ == "__main__":
    main()
