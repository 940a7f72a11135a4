"""--ema DECAY: validate, keep and export an exponential moving average of the trained weights.

Why: the weights after the last step of an epoch carry that step's noise; an average over the last
few hundred steps usually generalises a little better at no extra training cost (Polyak averaging).
After optimiser step t the average moves towards the new weights by

    w_t = (1 - DECAY) / (1 - DECAY^t)

so it holds the steps taken so far, weighting step i by DECAY^(t - i), never the weights before the
first step (the bias correction Adam uses for its moments: a fresh task head is not averaged in).
1 / (1 - DECAY) steps is about its memory: 0.99 -> the last ~100 steps.

What each file holds with --ema:
- validation during training scores the average (it is laid over the weights for the validation loop
  and the training weights come back before the next training batch), so `best.ckpt`, written right
  after validation, holds the average that scored best;
- `last.ckpt` (resume) holds the training weights as they are, and the average as this callback's
  state: a resumed run continues both, as an uninterrupted one would;
- at the end of training the average replaces the training weights: `weights.safetensors`, the
  final metrics and every export are the average.

Kept in float32 whatever the weights' dtype (under bf16-true, a bf16 average would round away the
small moves it is made of). Costs one pass over the trained tensors per step, and their size again
in memory (twice while validating). Not with FSDP, whose ranks hold shards under other names.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch

from lightft.errors import LightftError


class WeightEMA(L.Callback):
    """See the module docstring. `decay` in (0, 1)."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise LightftError(f"--ema must be between 0 and 1 (0.99 averages about the last 100 steps), not {decay}")
        self.decay = decay
        self.updates = 0  # optimiser steps averaged so far: trainer.global_step once each step is averaged
        self._names: list[str] = []
        self._params: list[torch.nn.Parameter] = []
        self._average: Optional[list[torch.Tensor]] = None
        self._loaded: Optional[dict[str, torch.Tensor]] = None  # the average from a checkpoint, until training starts
        self._training_weights: Optional[list[torch.Tensor]] = None  # set while the average is laid over them

    # --- which tensors ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if "fsdp" in type(trainer.strategy).__name__.lower():  # for callers past the CLI (check_train_options)
            raise LightftError("--ema does not work with --strategy fsdp (each rank holds shards of the weights); "
                               "use --strategy ddp or drop --ema")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._names, self._params = [n for n, _ in named], [p for _, p in named]

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._loaded is not None:  # resumed: the average saved with last.ckpt
            missing = [n for n in self._names if n not in self._loaded]
            if missing:
                raise LightftError(f"the checkpoint's --ema average lacks {missing[0]}; resume with the options "
                                   "the run was started with")
            self._average = [self._loaded[n].to(p.device, torch.float32) for n, p in zip(self._names, self._params)]
            self._loaded = None
        elif self._average is None:
            self._average = [p.detach().float().clone() for p in self._params]

    # --- averaging ----------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._restore_training_weights()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self.updates:  # a micro-batch of --grad-accum: no step yet
            return
        self.updates = trainer.global_step
        weight = (1.0 - self.decay) / (1.0 - self.decay ** self.updates)
        current = [p.detach().float() for p in self._params]  # .float() returns fp32 tensors themselves, no copy
        torch._foreach_lerp_(self._average, current, weight)

    # --- validation sees the average ----------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or self._average is None or self._training_weights is not None:
            return  # a standalone validate() scores the weights as they are (the average, after training)
        self._training_weights = [p.detach().clone() for p in self._params]
        self._lay_average()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """The average becomes the run's weights (weights.safetensors, final metrics, exports)."""
        if self._average is not None:
            self._lay_average()
        self._training_weights = None

    def _lay_average(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._params, [a.to(p.dtype) for a, p in zip(self._average, self._params)])

    def _restore_training_weights(self) -> None:
        if self._training_weights is not None:
            with torch.no_grad():
                torch._foreach_copy_(self._params, self._training_weights)
            self._training_weights = None

    # --- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """A full checkpoint (last.ckpt: Lightning calls this hook for those only) resumes training: it holds the
        training weights, also when one is written while the average is laid over them for validation."""
        if self._training_weights is not None:
            state = checkpoint["state_dict"]
            for name, weight in zip(self._names, self._training_weights):
                state[name] = weight

    def state_dict(self) -> dict[str, Any]:
        average = {} if self._average is None else {n: a.detach().cpu() for n, a in zip(self._names, self._average)}
        return {"decay": self.decay, "updates": self.updates, "average": average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("decay") != self.decay:
            raise LightftError(f"the run was trained with --ema {state.get('decay')}; resume with the same value")
        self.updates = int(state["updates"])
        self._loaded = state["average"] or None
