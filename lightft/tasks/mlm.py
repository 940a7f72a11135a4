"""Masked-LM continued pretraining of a BERT-family encoder: BERT's prediction head, loss, perplexity.

The head is BERT's `cls.predictions`: dense -> activation -> LayerNorm -> decoder tied to the input
embeddings (+ bias). The model skips `cls.*` keys (model code knows no tasks); the bert key map
names them `mlm_head.*`, and this module reads them through it (`checkpoint.read_extra_weights`)
when the base checkpoint has them; otherwise the head is freshly initialised (the decoder is
always the embedding matrix, as in BERT). Logits are only
computed at the masked positions: the vocabulary projection is the costly part and the other
positions carry no label. The run's backbone weights then feed `lightft train qa --init RUN`
(the head is left behind: it belongs to another task).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from lightft.checkpoint import read_extra_weights
from lightft.config import ModelConfig
from lightft.errors import LightftError
from lightft.families import family_for
from lightft.model import ACTIVATIONS, Transformer
from lightft.tasks.heads import matching
from lightft.tasks.module import TaskModule

NAMESPACE = "mlm_head."  # where the bert key map puts cls.predictions.* (lightft/families/bert.py)


class MLMHead(nn.Module):
    """(M, H) hidden states of masked positions -> (M, V) logits; decoder = the embedding matrix."""

    def __init__(self, backbone: Transformer):
        super().__init__()
        cfg = backbone.cfg
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.activation]
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.act(self.dense(matching(hidden, self.dense.weight))))
        return x @ matching(embeddings, x).t() + self.bias  # (M, V)


def load_pretrained_head(head: MLMHead, model_dir: str, cfg: ModelConfig) -> bool:
    """Copy `cls.predictions.*` from the checkpoint into `head`; False when the checkpoint has none."""
    found = read_extra_weights(model_dir, NAMESPACE)
    if not found:
        return False
    own = head.state_dict()
    key_map = family_for(cfg.hf_config).KEY_MAP

    def theirs(name: str) -> str:  # the checkpoint's name of a head tensor, for messages
        return key_map.to_checkpoint(NAMESPACE + name)[0]

    missing = sorted(set(own) - set(found))
    if missing:
        raise LightftError(f"{model_dir}: the checkpoint has a partial MLM head (missing "
                           f"{', '.join(theirs(k) for k in missing)}); re-export it")
    for k, v in found.items():
        if own[k].shape != v.shape:
            raise LightftError(f"{model_dir}: {theirs(k)} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    head.load_state_dict({k: v.to(own[k].dtype) for k, v in found.items()})
    return True


class MLMModule(TaskModule):
    task = "mlm"
    monitor, monitor_mode = "val_loss", "min"

    def build_head(self, model_dir: Optional[str] = None, pretrained_head: Optional[bool] = None) -> nn.Module:
        if self.backbone.cfg.causal:
            raise LightftError("mlm needs an encoder (BERT family); for decoders use `lightft train lm`")
        head = MLMHead(self.backbone)
        if model_dir is not None:
            self.task_args["pretrained_head"] = load_pretrained_head(head, model_dir, self.backbone.cfg)
        # masked-token loss sum and count; torchmetrics sums them over ranks
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({"nll": SumMetric(), "tokens": SumMetric()})
                                      for stage in ("val", "test")})
        return head

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=False)
        picked = batch["labels"] != -100  # (B, T)
        logits = self.head(out.hidden_states[picked], self.backbone.embed_tokens.weight)  # (M, V)
        return {"logits": logits.float(), "targets": batch["labels"][picked]}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(out["logits"], out["targets"])

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        loss = F.cross_entropy(out["logits"], out["targets"], reduction="sum")
        self.metrics[stage]["nll"].update(loss.detach())
        self.metrics[stage]["tokens"].update(float(out["targets"].numel()))

    def metrics_for(self, stage: str) -> dict[str, float]:
        total, count = (float(self.metrics[stage][k].compute()) for k in ("nll", "tokens"))
        for m in self.metrics[stage].values():
            m.reset()
        if count == 0:
            return {}
        mean = total / count
        return {"mlm_loss": mean, "perplexity": math.exp(min(mean, 50.0))}

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        raise LightftError("mlm has no predictions to write; use `lightft eval mlm` for loss and perplexity")
