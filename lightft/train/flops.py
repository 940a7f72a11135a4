"""Model FLOPs of a training or generation step, and the machine's measured matmul peak (what MFU divides by).

Model FLOPs count the work the model needs, not the work an implementation happens to do, so the
same number serves lightft's own progress bar and the benchmarks' comparison with a baseline:

    N      = weights of every matmul the step runs, frozen ones included: all block linears, BERT's
             pooler and the task head, and the LM head (a tied LM head counts: it is a matmul);
             token / position embeddings are lookups and do not count.
    N_lora = the LoRA A and B matrices.
    attn   = per layer and token, 4 · d_attn · ctx in the forward pass (QKᵀ and PV), with ctx the
             number of keys a query sees: (T + 1) / 2 on average under a causal mask, T otherwise
             (real tokens only: padding is not model work).

    full fine-tuning : 6 · N · tokens + 3 · attn          (forward 2N, backward 2N input + 2N weight grads)
    LoRA             : 4 · N · tokens + 6 · N_lora · tokens + 3 · attn
                       (forward 2N, backward input grads 2N, no weight grads for frozen weights)
    head only        : 2 · N_frozen · tokens + 4 · N_head · tokens + attn
                       (nothing before the head trains, so no gradient flows back into the backbone)
    generation       : 2 · N · new tokens + attn           (prefill counted as prompt tokens · 2N too)

All four are one rule (`step_flops`): every matmul weight costs 2 per token forward, 2 more for
its input gradient when the backward pass runs through the model, and 2 more for its own gradient
when it trains. `tokens` are real (non-padding) tokens; the LM head is counted on every real token
even where a loss skips it (prompt tokens), as the usual 6·N·D convention does.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional, Union

import torch

_PEAKS: dict[tuple, float] = {}  # training_matmul_peak's figures, per (dtype, device, threads)


def attention_flops(lengths: list[int], layers: int, d_attn: int, causal: bool) -> float:
    """Forward attention FLOPs (QKᵀ + PV) for sequences of these real lengths."""
    ctx = sum(t * (t + 1) / 2 if causal else t * t for t in lengths)
    return 4.0 * layers * d_attn * ctx


def step_flops(n: int, n_trained: int, lengths: list[int], layers: int, d_attn: int, causal: bool,
               backward: bool) -> float:
    """Model FLOPs of one step: `n` matmul weights run (LoRA factors included), `n_trained` of them get
    gradients; `backward`: the backward pass runs through the model (something before the head trains)."""
    tokens = sum(lengths)
    per_token = 2.0 * n * (2 if backward else 1) + 2.0 * n_trained
    return per_token * tokens + (3 if backward else 1) * attention_flops(lengths, layers, d_attn, causal)


def model_flops(mode: str, n: int, n_lora: int, lengths: list[int], layers: int, d_attn: int, causal: bool) -> float:
    """Model FLOPs of one step over sequences of these real lengths; mode: full | lora | generate.

    `n` excludes the LoRA factors (`n_lora`), as `matmul_params` returns them."""
    if mode == "full":
        return step_flops(n, n, lengths, layers, d_attn, causal, backward=True)
    if mode == "lora":
        return step_flops(n + n_lora, n_lora, lengths, layers, d_attn, causal, backward=True)
    if mode == "generate":
        return step_flops(n, 0, lengths, layers, d_attn, causal, backward=False)
    raise ValueError(mode)


def matmul_weights(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, torch.Tensor, bool]]:
    """(module, weight, is_lora) for every matmul weight of a model: each nn.Linear weight (LoRA-wrapped
    ones once) and each LoRA layer's A and B factors."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            # a quantised base (QLoRA) has no `weight`: a meta tensor of its shape stands in (only its size counts)
            w = m.weight if m.weight is not None else torch.empty(m.out_features, m.in_features, device="meta")
            yield m, w, False
        a, b = getattr(m, "lora_A", None), getattr(m, "lora_B", None)
        if isinstance(a, torch.nn.Parameter) and isinstance(b, torch.nn.Parameter):
            yield m, a, True
            yield m, b, True


def matmul_params(model: torch.nn.Module) -> tuple[int, int]:
    """(N, N_lora) of a lightft model: every nn.Linear weight (LoRA-wrapped ones once), and LoRA A + B."""
    n = n_lora = 0
    for _, w, is_lora in matmul_weights(model):
        if is_lora:
            n_lora += w.numel()
        else:
            n += w.numel()
    return n, n_lora


def matmul_peak(dtype: torch.dtype, n: Optional[int] = None, seconds: float = 1.5,
                device: Union[str, torch.device] = "cpu") -> float:
    """Best measured GFLOP/s of an n×n×n matmul in `dtype` on `device` (CPU: with the current thread count).

    The best of repeated timings, not the mean: the peak is what the machine can do, and a
    background process slows some repetitions down. CUDA runs several matmuls per timing, so the
    kernel launch and the synchronisation do not count against the GPU.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 2048)
    reps = 10 if cuda else 1
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    g = torch.Generator(device).manual_seed(0)  # own generator: training's random streams stay untouched (resume)
    a, b = (torch.randn(n, n, dtype=dtype, device=device, generator=g) for _ in range(2))
    torch.mm(a, b)  # first call: allocation and kernel selection, not timed
    sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def training_matmul_peak(dtype: torch.dtype, device: Union[str, torch.device] = "cpu", seconds: float = 0.25) -> float:
    """The matmul peak a training run divides MFU by: cheap, and measured once per process and setting.

    On CPU a 1024³ matmul (2 GFLOP) reaches the same GFLOP/s as 2048³ (17 GFLOP) at an eighth of
    the cost per repetition, so the probe takes about a quarter of a second instead of a second or more
    (several under load, where one 2048³ matmul alone takes over a second). A second run in the same
    process (`lightft demo`'s evaluation and training, a notebook) reuses the figure.
    """
    device = torch.device(device)
    key = (dtype, str(device), torch.get_num_threads())
    if key not in _PEAKS:
        _PEAKS[key] = matmul_peak(dtype, n=None if device.type == "cuda" else 1024, seconds=seconds, device=device)
    return _PEAKS[key]
