"""Lightning callbacks: real-token throughput in the progress bar and the CSV log; the data position for resume."""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L


class Throughput(L.Callback):
    """Tokens/s over real (non-padding) tokens and samples/s, averaged over `window` micro-batches."""

    def __init__(self, window: int = 10):
        self.window = window
        self._tokens = self._samples = self._batches = 0
        self._start = None
        self.total_tokens = 0
        self.total_padded = 0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        real = module.real_tokens(batch)
        self._tokens += real
        self._samples += batch["input_ids"].shape[0]
        self._batches += 1
        self.total_tokens += real
        self.total_padded += batch["input_ids"].numel()
        if self._batches >= self.window:
            elapsed = time.perf_counter() - self._start
            module.log("tok_s", self._tokens / elapsed * trainer.world_size, prog_bar=True, on_step=True, on_epoch=False)
            module.log("samples_s", self._samples / elapsed * trainer.world_size, on_step=True, on_epoch=False)
            self._tokens = self._samples = self._batches = 0
            self._start = time.perf_counter()

    def global_tokens(self, trainer: L.Trainer) -> int:
        """Real training tokens summed over all ranks (collective: call it on every rank)."""
        import torch

        total = torch.tensor(float(self.total_tokens), device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(total, reduce_op="sum").item())

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = None  # do not count evaluation time as training time
        self._tokens = self._samples = self._batches = 0


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
