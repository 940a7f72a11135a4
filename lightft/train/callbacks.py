"""Lightning callbacks: real-token throughput and MFU in the progress bar and CSV log; the data position for resume;
validation and a progress total that respect --max-steps."""

from __future__ import annotations

import time
from typing import Any, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
import torch
from torch import nn

from lightft.train.flops import matmul_weights, step_flops, training_matmul_peak
from lightft.train.timing import PhaseClock, maybe_phase


class Throughput(L.Callback):
    """Real-token throughput and model-FLOPs utilisation, averaged over `window` micro-batches.

    Logs `tok_s` and `mfu` (progress bar), `samples_s` and `gflop_s` (CSV log). tok_s, samples_s
    and gflop_s are for all ranks together (this rank's figure times the world size); `mfu` is per
    device: model FLOPs (lightft/train/flops.py) of this rank's real tokens over the time, divided
    by the matmul peak this rank measured at the start of training (about a quarter of a second, once
    per process, in the dtype the matmuls run in, on the training device; ranks sharing a CPU measure
    a shared peak).
    Every nn.Linear and LoRA factor of the module counts, except an LM head the task does not run
    (`TaskModule.runs_lm_head`). Time between batches (data loading, checkpoints) counts;
    evaluation does not.
    """

    def __init__(self, window: int = 10, peak_seconds: float = 0.25, clock: Optional[PhaseClock] = None):
        self.window, self.peak_seconds, self.clock = window, peak_seconds, clock
        self._tokens = self._samples = self._batches = 0
        self._flops = self._time = 0.0
        self._mark: Optional[float] = None
        self.total_tokens = 0
        self.total_padded = 0
        self.total_flops = self.total_time = 0.0
        self.peak_gflops = 0.0
        self._n = self._n_trained = 0  # matmul weights a step runs (LoRA factors included), and those trained
        self._backward = True
        self._shape: tuple[int, int, bool] = (0, 0, False)  # layers, d_attn, causal

    # --- what the model runs ------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """Count the matmul weights a step runs, before any strategy wraps or shards the module (FSDP)."""
        if stage != "fit":
            return
        cfg, lm_head = module.backbone.cfg, module.backbone.lm_head
        self._shape = (cfg.num_layers, cfg.num_heads * cfg.head_dim, cfg.causal)
        self._n = self._n_trained = 0
        for m, w, _ in matmul_weights(module):
            if m is lm_head and not module.runs_lm_head:
                continue  # a matmul this task never runs (the LM head of a decoder classifier)
            self._n += w.numel()
            self._n_trained += w.numel() if w.requires_grad else 0
        # the backward pass runs through the model when anything inside the backbone trains
        self._backward = any(p.requires_grad for p in module.backbone.parameters())

    def _step_flops(self, lengths: list[int]) -> float:
        layers, d_attn, causal = self._shape
        return step_flops(self._n, self._n_trained, lengths, layers, d_attn, causal, self._backward)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        precision = str(trainer.precision)
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision) or next(
            (m.weight.dtype for m in module.modules() if isinstance(m, nn.Linear) and m.weight is not None),
            torch.float32)
        with maybe_phase(self.clock, "probe"):
            self.peak_gflops = training_matmul_peak(dtype, module.device, seconds=self.peak_seconds)

    # --- counting -----------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        lengths = real_lengths(batch)
        flops = self._step_flops(lengths)
        real = sum(lengths)
        self._tokens += real
        self._samples += batch["input_ids"].shape[0]
        self._batches += 1
        self._flops += flops
        self._time += elapsed
        self.total_tokens += real
        self.total_padded += batch["input_ids"].numel()
        self.total_flops += flops
        self.total_time += elapsed
        if self._batches >= self.window:
            world, t = trainer.world_size, max(self._time, 1e-9)
            module.log("tok_s", self._tokens / t * world, prog_bar=True, on_step=True, on_epoch=False)
            module.log("samples_s", self._samples / t * world, on_step=True, on_epoch=False)
            module.log("gflop_s", self._flops / t / 1e9 * world, on_step=True, on_epoch=False)
            if self.peak_gflops:
                module.log("mfu", self._flops / t / 1e9 / self.peak_gflops, prog_bar=True, on_step=True,
                           on_epoch=False)
            self._tokens = self._samples = self._batches = 0
            self._flops = self._time = 0.0

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._mark = None  # do not count evaluation time as training time

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        """Whole-run figures for metrics.json (collective: call it on every rank): real tokens, GFLOP/s
        and MFU, all ranks together (FLOPs summed, over the slowest rank's time and the summed peaks)."""
        tokens, flops, peak = (self._reduce(trainer, v) for v in (self.total_tokens, self.total_flops,
                                                                   self.peak_gflops))
        seconds = self._reduce(trainer, self.total_time, "max")
        gflop_s = flops / seconds / 1e9 if seconds else 0.0
        out = {"train_tokens": int(tokens), "train_gflop_s": _sig(gflop_s),
               "train_mfu": _sig(gflop_s / peak) if peak else None,
               "matmul_peak_gflop_s": _sig(peak / trainer.world_size)}
        device = trainer.strategy.root_device
        if device.type == "cuda":  # this rank's peak of allocated GPU memory over the run
            out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return out

    @staticmethod
    def _reduce(trainer: L.Trainer, value: float, op: str = "sum") -> float:
        if trainer.world_size == 1:
            return float(value)
        t = torch.tensor(float(value), dtype=torch.float64, device=trainer.strategy.root_device)
        if op == "max":
            return float(trainer.strategy.all_gather(t).max().item())
        return float(trainer.strategy.reduce(t, reduce_op="sum").item())


def _sig(x: float) -> float:
    return float(f"{x:.4g}")  # 4 significant digits: a tiny model's MFU is 1e-4, a big one's 0.4


def real_lengths(batch: dict[str, Any]) -> list[int]:
    """Real tokens of each sequence in a batch: packed documents (segment_ids) count as their own
    sequences, since none attends to another; else each row's attention-mask sum; else full rows."""
    ids, mask = batch["input_ids"], batch.get("attention_mask")
    segments = batch.get("segment_ids")
    if segments is not None:  # one copy to the host, then per-row counts there (no device sync per row)
        real = (segments if mask is None else segments * (mask != 0)).cpu()  # padding: segment 0
        return [int(c) for row in real for c in torch.unique(row[row > 0], return_counts=True)[1]]
    if mask is not None:
        return [int(v) for v in mask.sum(dim=1).tolist()]
    return [ids.shape[1]] * ids.shape[0]


class DataPosition(L.Callback):
    """Save and restore the training data position (epoch, samples consumed) with the checkpoint.

    Counting here (after the step) rather than in the sampler matters: Lightning fetches the next
    batch before the current one has trained, so the sampler alone would be one batch ahead.
    Checkpoint callbacks run after this one (Lightning orders them last), so a checkpoint saved at
    this batch records it as consumed. The position travels as this callback's state because
    Lightning 2.6 does not hand the saved loader state back to a train loader that was already
    built to count the steps for the LR schedule (`estimated_stepping_batches`).
    """

    def __init__(self) -> None:
        self._trainer: Optional[L.Trainer] = None
        self._restored: Optional[dict[str, Any]] = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _loader(self) -> Any:
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        return loader if hasattr(loader, "mark_consumed") else None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if (loader := self._loader()) is not None:
            loader.mark_consumed(batch_idx + 1)

    def state_dict(self) -> dict[str, Any]:
        loader = self._loader()
        return loader.state_dict() if loader is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state or None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._restored is not None and (loader := self._loader()) is not None:
            loader.load_state_dict(self._restored)  # applied when the next epoch's iterator starts
        self._restored = None


class ValidateAtMaxSteps(L.Callback):
    """With --max-steps shorter than an epoch, Lightning stops without validating, so no best checkpoint
    is chosen. Asking it to stop at the last step instead makes its loop validate first (as it does
    for early stopping), and the best checkpoint is written as the README promises."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class StepBoundProgressBar(TQDMProgressBar):
    """The progress bar's total (and so its ETA) counts the batches --max-steps leaves, not the whole epoch."""

    @property
    def total_train_batches(self) -> Union[int, float]:
        total = super().total_train_batches
        trainer = self.trainer
        if trainer.max_steps > 0:
            total = min(total, (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches)
        return total
