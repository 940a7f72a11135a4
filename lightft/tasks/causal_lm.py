"""Causal language modelling (`lm`, `instruct`): next-token loss on labelled positions only, perplexity.

The backbone runs without its LM head (`return_logits=False`); hidden states are gathered at the
positions whose next token has a label and only those go through `lm_head` and cross-entropy, so
no logits are computed for padding or prompt tokens. With kernels on (`--kernels auto`) that loss
is `lightft/kernels/cross_entropy.py`: the same sum in chunks, gradients taken in the same pass, so
full-vocabulary logits exist for at most a chunk of positions at a time. For `instruct` the labels
cover responses only, so loss and perplexity are response-token figures.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from lightft.errors import LightftError
from lightft.kernels import enabled as kernels_enabled
from lightft.kernels.cross_entropy import CHUNK, linear_cross_entropy
from lightft.tasks.module import TaskModule


def next_token_nll(lm_head: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor,
                   chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token NLL, number of labelled tokens) for hidden (B, T, H) and labels (B, T).

    Position t predicts labels[t + 1]; positions whose next label is -100 are never projected.
    `chunk`: take the kernel, `chunk` labelled positions per LM-head matmul (the same values; see the
    module docstring); None: the plain lm_head + cross-entropy.
    """
    assert lm_head.bias is None, "LM heads have no bias in the supported families"
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != -100
    h = hidden[:, :-1][keep]  # (N, H): only the labelled positions
    y = targets[keep]  # (N,)
    if chunk is not None:
        total = linear_cross_entropy(h, lm_head.weight, y, chunk)
    else:
        total = F.cross_entropy(lm_head(h).float(), y, reduction="sum")  # (N, V) logits, fp32 softmax
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
        nll, n = next_token_nll(self.backbone.lm_head, out.hidden_states, batch["labels"],
                                chunk=CHUNK if kernels_enabled(self.backbone) else None)
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
