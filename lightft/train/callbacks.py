"""Lightning callbacks: real-token throughput in the progress bar and the CSV log."""

from __future__ import annotations

import time
from typing import Any

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

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = None  # do not count evaluation time as training time
        self._tokens = self._samples = self._batches = 0
