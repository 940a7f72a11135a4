"""Small heads every task shares: pooling a sequence to one vector, and dropout -> linear."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


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
        return self.out(self.dropout(states))  # (..., H) -> (..., labels)
