"""AdamW with the usual parameter groups, and warm-up followed by linear / cosine / constant decay."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from lightft.options import OptimOptions


def parameter_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float,
                     head_names: set[str] = frozenset(), head_lr: float | None = None) -> list[dict]:
    """Decay matrices only: norms, biases (1-D) and embeddings-as-vectors get no weight decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        is_head = name.split(".")[0] in head_names
        groups.setdefault((p.ndim >= 2, is_head), []).append(p)
    out = []
    for (decay, is_head), params in groups.items():
        out.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                    "lr": (head_lr or lr) if is_head else lr})
    return out


def lr_lambda(total_steps: int, warmup: float, schedule: str):
    """Multiplier on the peak lr at optimiser step `step` (0-based)."""
    warm = int(warmup) if warmup >= 1 else int(round(warmup * total_steps))

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return f


def build_optimizer(module: nn.Module, opts: OptimOptions, lr: float, total_steps: int, head_names: set[str]):
    """AdamW at peak `lr` over the trainable parameters (see parameter_groups), with the warm-up / decay
    schedule of `opts`."""
    groups = parameter_groups(module.named_parameters(), opts.weight_decay, lr, head_names, opts.head_lr)
    if not groups:
        raise AssertionError("no trainable parameters")
    # The fused AdamW kernel runs on CPU as well as CUDA and is 4-6x faster than the foreach
    # implementation on CPU (22.7M MiniLM parameters, 1 thread: 30 ms vs 120-190 ms per step).
    # Sharded (FSDP/DTensor) or mixed-device parameters are not supported by it: fall back to foreach.
    try:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, opts.warmup, opts.schedule))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
