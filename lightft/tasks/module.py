"""The base LightningModule: a backbone `Transformer` + a small task head + loss + optimiser.

A task subclass implements `build_head`, `forward(batch) -> dict`, `loss(batch, out)`, and
`update_metrics` / `metrics_for` (torchmetrics, synchronised across ranks by Lightning). This
base owns what every task shares: LoRA/freezing of the backbone, one `_shared_step` for train /
val / test, logging, the optimiser, and checkpoints that hold only what training changes.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric

from lightft.checkpoint import load_checked
from lightft.model import Transformer
from lightft.options import OptimOptions, Options
from lightft.tasks.optim import build_optimizer, clip_in_step, is_fused_adam


class TaskModule(L.LightningModule):
    """See the module docstring. `head` holds every task-specific parameter (always trainable)."""

    task = "base"
    monitor = "val_loss"  # metric that picks the best checkpoint
    monitor_mode = "min"

    def __init__(self, backbone: Transformer, opts: Options, **task_args: Any):
        super().__init__()
        self.backbone, self.opts, self.task_args = backbone, opts, task_args
        self.head = self.build_head(**task_args)
        self.strict_loading = False  # our checkpoints hold trainable tensors only (see on_save_checkpoint)
        # load_model returns eval mode (inference is the safe default) and Lightning keeps the modes it
        # finds when fitting starts: a task module starts in train mode so dropout is on while training.
        self.train()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "TaskModule":
        """Casting the module (`.to(torch.bfloat16)`, as Lightning does under --precision bf16-true) leaves
        the metrics' float states in float32: torchmetrics guards `.half()` / `.float()` but not
        `.to(dtype)`, and a bf16 sum of 68,000 token losses keeps three significant digits (each batch's
        sum rounded to the nearest 512 or 1,024): reported perplexities came out as bf16 numbers (19.125)."""
        super()._apply(fn, *args, **kwargs)
        for metric in self.modules():
            if isinstance(metric, Metric) and any(
                    torch.is_tensor(v) and v.is_floating_point() and v.dtype != torch.float32
                    for v in metric.metric_state.values()):
                metric.set_dtype(torch.float32)
        return self

    # --- what a task implements ---------------------------------------------------------------
    def build_head(self, **task_args: Any) -> nn.Module:
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        """Accumulate metric state for a val/test batch (default: loss only)."""

    def metrics_for(self, stage: str) -> dict[str, float]:
        """Compute and reset the epoch's metrics for `stage` (default: none besides the loss)."""
        return {}

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        raise NotImplementedError

    @property
    def label_smoothing(self) -> float:
        """--label-smoothing while training; 0 otherwise, so validation loss stays comparable across runs."""
        return self.opts.label_smoothing if self.training else 0.0

    @property
    def runs_lm_head(self) -> bool:
        """Whether a training step runs the backbone's LM head (model FLOPs count it only then).

        Default: a task without parameters of its own scores tokens with the LM head (lm, instruct);
        a task with a head (classify, ner, qa, mlm) asks the backbone for hidden states only.
        """
        return self.backbone.lm_head is not None and not any(True for _ in self.head.parameters())

    def task_state(self) -> dict[str, Any]:
        """What run.json must remember to rebuild this module (label names, templates...)."""
        return dict(self.task_args)

    # --- shared steps -------------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        out = self(batch)
        loss = self.loss(batch, out)
        bs = batch["input_ids"].shape[0]
        if stage == "train":
            # sync_dist: the logged loss is the mean over all ranks, i.e. the loss of the global batch
            self.log("train_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        else:
            self.log(f"{stage}_loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=bs)
            self.update_metrics(stage, batch, out)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        # decided together on all ranks: one rank stopping alone would leave the others waiting forever
        if self.any_rank(not torch.isfinite(loss.detach())):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {self.global_step}; lower --lr or use --precision 32-true")
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self.predict_records(batch, self(batch))

    def on_validation_epoch_end(self) -> None:
        for name, value in self.metrics_for("val").items():
            self.log(f"val_{name}", value, prog_bar=name in ("accuracy", "f1"), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        for name, value in self.metrics_for("test").items():
            self.log(f"test_{name}", value, sync_dist=True)

    # --- optimiser and checkpoints ------------------------------------------------------------
    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        return build_optimizer(self, OptimOptions.of(self.opts), self.opts.resolved_lr(), max(1, steps),
                               head_names={"head"}, num_layers=self.backbone.cfg.num_layers)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        """--grad-clip by global norm, done by the fused AdamW as it steps (`optim.clip_in_step`: one pass over
        the gradients fewer) under --kernels auto; Lightning's own clipping otherwise (a loss scaler, another
        optimiser, --kernels off)."""
        if (gradient_clip_val and gradient_clip_algorithm in (None, "norm")  # GradClipAlgorithmType.NORM == "norm"
                and self.opts.kernels == "auto" and is_fused_adam(optimizer)
                and getattr(self.trainer.precision_plugin, "scaler", None) is None):
            clip_in_step(optimizer, float(gradient_clip_val))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def any_rank(self, flag: Any) -> bool:
        """True if `flag` holds on any rank, decided together (collective when a Trainer runs several)."""
        flag = bool(flag)
        if self._trainer is None or self.trainer.world_size == 1:
            return flag
        return bool(self.trainer.strategy.reduce(torch.tensor(float(flag), device=self.device), reduce_op="sum") > 0)

    def trainable_names(self) -> set[str]:
        """State-dict names of the trainable tensors (FSDP / activation-checkpointing wrappers removed)."""
        return {n.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
                for n, p in self.named_parameters() if p.requires_grad}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors training changes (LoRA factors + head, or everything under --full)."""
        trainable = self.trainable_names()
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold the trainable tensors only (the optimiser state covers only those too: the
        optimiser is built from trainable parameters), plus plain values: loadable with weights_only."""
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        bad = next((k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and not v.isfinite().all()),
                   None)
        if self.any_rank(bad is not None):
            where = bad or "on another rank"
            raise FloatingPointError(f"weights became non-finite by step {self.global_step} ({where}); "
                                     "this checkpoint is not saved")
        checkpoint["lightft"] = {"task": self.task, "task_state": self.task_state(), "options": self.opts.to_dict()}

    def load_trainable(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        """Load a trainable-only state dict; every key must exist here with the same shape."""
        load_checked(self, state, source)
