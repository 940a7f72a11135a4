"""Sequence classification: pooled backbone output -> dropout -> linear; cross-entropy; accuracy and macro-F1."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lightft.tasks.heads import LinearHead, pool
from lightft.tasks.module import TaskModule


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of softmax(logits / T) against the target distribution softened by the same T, times T^2.

    The targets arrive as probabilities (the teachers' average), so softening works on their logarithms:
    softmax(log p / T) is p^(1/T) renormalised, what softmax(teacher logits / T) gives for one teacher. The T^2
    factor keeps the soft term's gradient on the scale of the gold term's as T grows. Probabilities are floored
    at 1e-6 (the resolution they are stored at) before the logarithm."""
    if temperature != 1.0:
        targets = (targets.clamp_min(1e-6).log() / temperature).softmax(-1)  # (B, labels)
        return temperature ** 2 * F.cross_entropy(logits / temperature, targets)
    return F.cross_entropy(logits, targets)


class ClassificationModule(TaskModule):
    task = "classify"
    monitor, monitor_mode = "val_accuracy", "max"

    def build_head(self, label_names: list[str], pooling: Optional[str] = None,
                   head_bias: Optional[bool] = None) -> nn.Module:
        cfg = self.backbone.cfg
        if head_bias is None:
            # A decoder's head has no bias, like transformers' *ForSequenceClassification `score`, so its
            # export loads there exactly. Runs saved before `head_bias` was recorded (they name their
            # pooling) kept a bias on every family.
            head_bias = not cfg.causal if pooling is None else True
        self.task_args["head_bias"] = head_bias
        pooling = pooling or self.opts.pooling
        if pooling == "auto":
            pooling = "last" if cfg.causal else ("pooler" if cfg.pooler else "cls")
        self.pooling = pooling
        self.task_args["pooling"] = pooling
        n = len(label_names)
        self.metrics = nn.ModuleDict({
            stage: MetricCollection({"accuracy": MulticlassAccuracy(n, average="micro"),
                                     "macro_f1": MulticlassF1Score(n, average="macro")})
            for stage in ("val", "test")
        })
        return LinearHead(cfg.hidden_size, n, self.opts.classifier_dropout, bias=head_bias)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids"), return_logits=False)
        pooled = pool(out.hidden_states, batch["attention_mask"], self.pooling, out.pooled)
        return {"logits": self.head(pooled)}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy with the gold labels; with teachers' soft targets in the batch (training under
        --teachers), alpha x cross-entropy with those + (1 - alpha) x the gold one. Against soft targets the
        cross-entropy differs from the KL divergence only by the targets' own entropy, a constant."""
        logits = out["logits"].float()
        gold = F.cross_entropy(logits, batch["labels"], ignore_index=-100, label_smoothing=self.label_smoothing)
        soft = batch.get("soft_targets")
        if soft is None:
            return gold
        alpha, t = self.opts.distill_alpha, self.opts.distill_temperature
        return alpha * soft_cross_entropy(logits, soft.to(logits.device), t) + (1 - alpha) * gold

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        keep = batch["labels"] != -100
        if keep.any():
            self.metrics[stage].update(out["logits"][keep].float(), batch["labels"][keep])

    def metrics_for(self, stage: str) -> dict[str, float]:
        values = {k: v for k, v in self.metrics[stage].compute().items()}
        self.metrics[stage].reset()
        return values

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        probs = out["logits"].float().softmax(-1)
        names = self.task_args["label_names"]
        return [{"line": int(line), "label": names[int(p.argmax())],
                 "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)}}
                for line, p in zip(batch["line"], probs)]
