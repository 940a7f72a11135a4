"""One attention call, forward + backward, at a layer's shape: SDPA against lightft's kernels.

The source of the one-layer timings in lightft/kernels/attention.py's docstring. For each case it times
`torch.nn.functional.scaled_dot_product_attention` (what lightft/model.py's reference `sdpa_attention`
calls) and the kernel `attend` would pick there, in turns (`--reps` each, interleaved), and prints the
median milliseconds, their ratio and whether `attend` takes the kernel at that shape:

    explicit   encoder (MiniLM: 12 heads of 32), right-padded batch, with and without attention dropout,
               fp32 and bf16: kernels/attention.explicit_attention
    blocked    decoder (SmolLM2: 9 query / 3 key-value heads of 64), causal, bf16, no dropout:
               kernels/attention's blocked backward

    python benchmarks/attention_layer.py --threads 2 [--batch 32] [--lengths 40,64,128] [--reps 20]

Nothing is read from disk; the inputs are random with a fixed seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from lightft.kernels.attention import (_blocked_attention, blocked_backward_applies, explicit_applies,  # noqa: E402
                                       explicit_attention)
from lightft.model import sdpa_attention  # noqa: E402


def inputs(batch: int, heads: int, kv_heads: int, length: int, head_dim: int, dtype: torch.dtype,
           padded: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """q (B, H, T, hd), k and v (B, KV, T, hd) needing gradients; a right-padding mask (B, 1, 1, T) or None."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, h, length, head_dim, generator=g).to(dtype).requires_grad_()
               for h in (heads, kv_heads, kv_heads))
    if not padded:
        return q, k, v, None
    real = torch.randint(length // 2, length + 1, (batch,), generator=g)  # (B,) real tokens per row
    real[0] = length  # the longest row sets the batch's length
    mask = (torch.arange(length)[None, :] < real[:, None])[:, None, None, :]  # (B, 1, 1, T)
    return q, k, v, mask


def fwd_bwd(attention: Callable[[], torch.Tensor], tensors: tuple[torch.Tensor, ...]) -> None:
    out = attention()
    out.backward(torch.ones_like(out))
    for t in tensors:
        t.grad = None


def median_ms(fn: Callable[[], None], other: Callable[[], None], reps: int) -> tuple[float, float]:
    """Median milliseconds of fn and other, called in turns (order swapped every repetition) after a warm-up."""
    fn(), other()
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(reps):
        order = ((0, fn), (1, other)) if r % 2 == 0 else ((1, other), (0, fn))
        for side, f in order:
            start = time.perf_counter()
            f()
            times[side].append(1e3 * (time.perf_counter() - start))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32, help="encoder batch (the decoder case uses 8 rows)")
    p.add_argument("--lengths", default="40,64,128", help="encoder sequence lengths")
    p.add_argument("--decoder-length", type=int, default=512)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads {a.threads}, torch {torch.__version__}; median ms of forward + backward over {a.reps} reps\n")
    print("| case | SDPA (reference) | lightft kernel | ratio | `attend` takes the kernel |")
    print("| --- | ---: | ---: | ---: | --- |")
    cases = [(f"encoder B={a.batch} T={t} {name} dropout {p_drop}", a.batch, 12, 12, t, 32, dtype, True, p_drop, False)
             for t in map(int, a.lengths.split(","))
             for name, dtype, p_drop in (("fp32", torch.float32, 0.1), ("bf16", torch.bfloat16, 0.1),
                                         ("bf16", torch.bfloat16, 0.0))]
    cases.append((f"decoder B=8 T={a.decoder_length} bf16 causal (GQA 9/3)", 8, 9, 3, a.decoder_length, 64,
                  torch.bfloat16, False, 0.0, True))
    for label, batch, heads, kv, length, hd, dtype, padded, p_drop, causal in cases:
        q, k, v, mask = inputs(batch, heads, kv, length, hd, dtype, padded)
        applies = (blocked_backward_applies if causal else explicit_applies)(q, k, v, p_drop)
        if causal:
            kernel = lambda: _blocked_attention(q, k, v, mask)  # noqa: E731
        else:
            kernel = lambda: explicit_attention(q, k, v, mask, p_drop, causal)  # noqa: E731
        reference = lambda: sdpa_attention(q, k, v, mask, p_drop, causal)  # noqa: E731
        ref_ms, kernel_ms = median_ms(lambda: fwd_bwd(reference, (q, k, v)), lambda: fwd_bwd(kernel, (q, k, v)),
                                      a.reps)
        taken = "yes" if applies else "no: SDPA (stored scores over the cap)" if not causal else "no"
        print(f"| {label} | {ref_ms:.1f} | {kernel_ms:.1f} | {ref_ms / kernel_ms:.2f}x | {taken} |", flush=True)


if __name__ == "__main__":
    main()
