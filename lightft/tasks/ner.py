"""Token classification (NER): per-token linear head, cross-entropy on labelled sub-words, entity-level P/R/F1.

Word tags are read from each word's first sub-word. Entities are extracted from BIO / IOB2 tag
sequences with seqeval's default (non-strict) rules, so the figures compare with published ones:
a span starts at `B-X`, and also at an `I-X` that follows `O` or a different type; it ends before
`O`, `B-*`, or a change of type. Precision / recall / F1 are micro-averaged over exact
(type, first word, last word) matches, like `seqeval.metrics.f1_score`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from lightft.tasks.heads import LinearHead
from lightft.tasks.module import TaskModule

Span = tuple[str, int, int]  # (type, first word, end word exclusive)


def entity_spans(tags: list[str]) -> list[Span]:
    """Entities of one BIO / IOB2 tag sequence, with seqeval's default semantics (see module docstring)."""
    spans: list[Span] = []
    current, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = ("O", None) if tag == "O" else (tag[:1], tag[2:])
        if current is not None and (prefix != "I" or kind != current):
            spans.append((current, start, i))
            current = None
        if prefix in ("B", "I") and current is None:
            current, start = kind, i
    return spans


class EntityF1(Metric):
    """Micro-averaged entity precision / recall / F1; sum states so DDP ranks combine exactly."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: list[list[str]], gold: list[list[str]]) -> None:
        for p, g in zip(predicted, gold):
            ps, gs = set(entity_spans(p)), set(entity_spans(g))
            self.correct += len(ps & gs)
            self.predicted += len(ps)
            self.gold += len(gs)

    def compute(self) -> dict[str, torch.Tensor]:
        c = self.correct.float()
        precision = c / self.predicted.clamp(min=1)
        recall = c / self.gold.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return {"precision": precision, "recall": recall, "f1": f1}


class NerModule(TaskModule):
    task = "ner"
    monitor, monitor_mode = "val_f1", "max"

    def build_head(self, label_names: list[str]) -> nn.Module:
        self.metrics = nn.ModuleDict({stage: EntityF1() for stage in ("val", "test")})
        return LinearHead(self.backbone.cfg.hidden_size, len(label_names), self.opts.classifier_dropout)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False)
        return {"logits": self.head(out.hidden_states)}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = out["logits"].float()
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=self.label_smoothing)

    def word_tags(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[list[str]]:
        """Predicted tag per word (from its first sub-word); words cut by --max-length are `O`."""
        names = self.task_args["label_names"]
        best = out["logits"].argmax(-1).tolist()  # (B, T)
        result = []
        for row, wids, starts in zip(best, batch["word_ids"].tolist(), batch["starts"]):
            tags = ["O"] * len(starts)
            prev = -1
            for label, w in zip(row, wids):
                if w >= 0 and w != prev:
                    tags[w] = names[label]
                prev = w
            result.append(tags)
        return result

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        keep = [i for i, g in enumerate(batch["tags"]) if g]
        if keep:
            predicted = self.word_tags(batch, out)
            self.metrics[stage].update([predicted[i] for i in keep], [batch["tags"][i] for i in keep])

    def metrics_for(self, stage: str) -> dict[str, float]:
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        return values

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        records = []
        for line, tags, text, starts, ends in zip(batch["line"].tolist(), self.word_tags(batch, out), batch["text"],
                                                  batch["starts"], batch["ends"]):
            entities = [{"text": text[starts[a]:ends[b - 1]], "type": kind, "start": starts[a], "end": ends[b - 1]}
                        for kind, a, b in entity_spans(tags)]
            records.append({"line": line, "text": text, "tags": tags, "entities": entities})
        return records
