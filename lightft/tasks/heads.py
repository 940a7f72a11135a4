"""Small heads every task shares: pooling a sequence to one vector, and dropout -> linear."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def matching(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`x` in the dtype of `like` (a head's weight), unless autocast chooses the matmul's dtype anyway.

    A frozen backbone may run in bf16 while the heads train in fp32 (`--dtype auto`,
    lightft/precision.py). Lightning's bf16 autocast covers training and evaluation; a forward
    outside it (samples for report.html, a notebook) would otherwise hand bf16 states to an fp32
    `nn.Linear`, which refuses mixed dtypes."""
    if x.dtype == like.dtype or torch.is_autocast_enabled(x.device.type):
        return x
    return x.to(like.dtype)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, pooled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T, H) -> (B, H): BERT pooler output, the first ([CLS]) token, the masked mean, or the last real token."""
    if how == "pooler":
        assert pooled is not None, "pooling 'pooler' needs a backbone with a pooler"
        return pooled
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "last":
        last = mask.long().sum(1) - 1  # right padding: index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
    raise AssertionError(f"unknown pooling {how}")


class LinearHead(nn.Module):
    """dropout -> linear, on pooled (B, H) or per-token (B, T, H) states; the head of classify and ner."""

    def __init__(self, hidden: int, num_labels: int, dropout: float, bias: bool = True):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels, bias=bias)
        nn.init.normal_(self.out.weight, std=0.02)  # small logits at the start, as BERT-style heads do
        if bias:
            nn.init.zeros_(self.out.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(matching(states, self.out.weight)))  # (..., H) -> (..., labels)
