"""Causal language modelling (`lm`, `instruct`): next-token loss on labelled positions only, perplexity.

The backbone runs without its LM head (`return_logits=False`); hidden states are gathered at the
positions whose next token has a label, and cross-entropy goes through `lm_head` in chunks, each
recomputed in the backward pass (activation checkpointing), so full-vocabulary logits exist for at
most `chunk` positions at a time — never for padding or prompt tokens. For `instruct` the labels
cover responses only, so loss and perplexity are response-token figures.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchmetrics import SumMetric

from lightft.errors import LightftError
from lightft.train.module import TaskModule

CHUNK = 1024  # labelled positions per lm_head call (1024 x 49k vocab x fp32 = 200 MB of logits at most)


def _chunk_nll(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of one chunk: (N, H) hidden states, (N,) target ids."""
    logits = lm_head(hidden).float()  # (N, vocab)
    return F.cross_entropy(logits, targets, reduction="sum")


def next_token_nll(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                   chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token NLL, number of labelled tokens) for hidden (B, T, H) and labels (B, T).

    Position t predicts labels[t + 1]; positions whose next label is -100 are never projected.
    """
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != -100
    h = hidden[:, :-1][keep]  # (N, H): only the labelled positions
    y = targets[keep]  # (N,)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, y.numel(), chunk):
        hc, yc = h[start : start + chunk], y[start : start + chunk]
        if torch.is_grad_enabled() and hc.requires_grad:
            total = total + checkpoint(_chunk_nll, lm_head, hc, yc, use_reentrant=False)
        else:
            total = total + _chunk_nll(lm_head, hc, yc)
    return total, torch.tensor(y.numel(), device=hidden.device)


class CausalLMModule(TaskModule):
    """No head of its own: the backbone's `lm_head` (trained under --full, frozen under LoRA) scores tokens."""

    task = "lm"
    monitor, monitor_mode = "val_loss", "min"

    def build_head(self, **task_args: Any) -> nn.Module:
        if self.backbone.lm_head is None or not self.backbone.cfg.causal:
            raise LightftError(f"task {self.task!r} needs a decoder with an LM head (GPT-2 or Llama family); "
                               f"this model is a {self.backbone.cfg.family} encoder")
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({"nll": SumMetric(), "tokens": SumMetric()})
                                      for stage in ("val", "test")})
        return nn.Module()  # nothing task-specific to train

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                            position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids"),
                            return_logits=False)
        nll, n = next_token_nll(self.backbone.lm_head, out.hidden_states, batch["labels"])
        return {"nll_sum": nll, "n_tokens": n}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        return out["nll_sum"] / out["n_tokens"].clamp(min=1)

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        self.metrics[stage]["nll"].update(out["nll_sum"].detach())
        self.metrics[stage]["tokens"].update(out["n_tokens"].float())

    def metrics_for(self, stage: str) -> dict[str, float]:
        """Token-weighted loss over the whole split (the logged `loss` averages batches) and its exp."""
        nll, n = self.metrics[stage]["nll"].compute(), self.metrics[stage]["tokens"].compute()
        for m in self.metrics[stage].values():
            m.reset()
        token_loss = nll / n.clamp(min=1)
        return {"token_loss": token_loss, "perplexity": torch.exp(token_loss), "tokens": n}

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        raise LightftError(f"predict is not defined for {self.task}: use `lightft eval {self.task}` for loss "
                           "and perplexity, or `lightft generate` for text")


class InstructModule(CausalLMModule):
    task = "instruct"
