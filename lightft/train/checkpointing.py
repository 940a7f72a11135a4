"""Checkpoints that never lose work: atomic writes, tensors-and-plain-values only, exact resume.

- `AtomicCheckpointIO` writes `name.tmp-PID` and renames it over `name`
  (`lightft.checkpoint.write_atomic`): a kill at any moment leaves either the old or the new
  checkpoint, never half of one, and a full disk is one line that keeps the old one. `last.ckpt`,
  which a resume starts from, is also fsynced (so it survives a power loss); `best.ckpt` holds the
  trained tensors only (no optimiser state: nothing resumes from it) and is not fsynced. Loading uses
  `torch.load(weights_only=True)`: a checkpoint holding pickled objects is refused, not executed.
- `PeriodicCheckpoint` keeps `checkpoints/last.ckpt`: every `--checkpoint-every` optimiser steps and
  at the end of each epoch.
- `RngState` puts the torch / CUDA / Python / NumPy random states of every rank into the checkpoint
  and restores them on resume, so dropout masks after a resume are the ones an uninterrupted run
  would draw. (The data position travels with the `DataPosition` callback, lightft/train/callbacks.py,
  from `lightft.data.sampler.ResumableLoader`; optimiser, scheduler and loop counters with Lightning.)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightft.runs.checkpoint_file import LAST, atomic_torch_save, load_checkpoint_file
from lightft.train.timing import PhaseClock, maybe_phase



class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves and weights-only loads (see the module docstring).

    `clock`: the run's PhaseClock, which counts the writes as "checkpoints"."""

    def __init__(self, clock: Optional[PhaseClock] = None):
        super().__init__()
        self.clock = clock

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        with maybe_phase(self.clock, "checkpoints"):
            atomic_torch_save(checkpoint, Path(path), durable=Path(path).name == LAST)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None, weights_only: Optional[bool] = None
                        ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location if map_location is not None else "cpu")


def validation_follows(trainer: L.Trainer) -> bool:
    """True in the hooks of a training batch after which Lightning validates (its `_should_check_val_fx`
    for the settings lightft uses: every --val-every steps, or before a stop that --max-steps asks for).
    A checkpoint taken before that validation resumes past it: the best checkpoint would be chosen
    without it."""
    if trainer.should_stop:
        return True
    every = trainer.val_check_batch
    if not every or every == float("inf"):
        return False
    loop = trainer.fit_loop.epoch_loop
    index = loop.total_batch_idx if trainer.check_val_every_n_epoch is None else loop.batch_idx
    return (index + 1) % every == 0


def last_batch_of_epoch(trainer: L.Trainer) -> bool:
    """True in the hooks of an epoch's last batch. A checkpoint saved there resumes into an epoch whose
    batches are all done but whose end (validation, epoch counter) is not, and Lightning does not continue
    such a checkpoint exactly; the epoch-end checkpoint right after it does."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class PeriodicCheckpoint(Checkpoint):
    """`last.ckpt` every `every` optimiser steps (if set) and at the end of every training epoch.

    A `Checkpoint` subclass, so Lightning runs it after the other callbacks of the same hook (the
    data position and RNG state it saves are then up to date). A step that ends an epoch is saved at
    the epoch's end, and a step followed by validation after it: only there does Lightning continue a
    checkpoint exactly (`last_batch_of_epoch`, `validation_follows`)."""

    def __init__(self, dirpath: Path, every: Optional[int]):
        self.path, self.every = Path(dirpath) / LAST, every
        self._saved_at, self._after_validation = -1, False

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step  # optimiser steps; unchanged while gradients accumulate
        if not (self.every and step and step % self.every == 0 and step != self._saved_at):
            return
        if last_batch_of_epoch(trainer):
            return  # the epoch-end save follows at once
        if validation_follows(trainer):
            self._after_validation = True  # saved in on_validation_end
            return
        self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._after_validation and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self._saved_at, self._after_validation = trainer.global_step, False

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)


def _rng_tensors() -> dict[str, torch.Tensor]:
    """This process's random states as tensors (so they gather across ranks and load weights-only)."""
    state, gauss = random.getstate()[1], random.getstate()[2]
    np_state = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(state, dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": torch.tensor([np_state[2], np_state[3], np_state[4]], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _set_rng_tensors(s: dict[str, torch.Tensor]) -> None:
    # a fresh tensor: torch reads the raw storage of the state it is given (a view would crash it)
    torch.set_rng_state(s["torch"].to("cpu", torch.uint8).clone())
    gauss = float(s["python_gauss"][0])
    random.setstate((3, tuple(int(x) for x in s["python"].tolist()), None if gauss != gauss else gauss))
    pos, has_gauss, cached = s["numpy_meta"].tolist()
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"].to("cpu", torch.uint8).clone())


class RngState(L.Callback):
    """Save every rank's random states in the checkpoint; restore this rank's on resume."""

    def __init__(self) -> None:
        self._trainer: Optional[L.Trainer] = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        local = _rng_tensors()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return {"world_size": 1, "ranks": [local]}
        # every rank reaches here (dump_checkpoint runs on all ranks; only rank 0 writes the file)
        device = trainer.strategy.root_device
        gathered = {k: trainer.strategy.all_gather(v.to(device)).cpu() for k, v in local.items()}  # (W, ...)
        return {"world_size": trainer.world_size,
                "ranks": [{k: v[r].clone() for k, v in gathered.items()} for r in range(trainer.world_size)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank = self._trainer.global_rank if self._trainer is not None else 0
        ranks = state.get("ranks", [])
        if rank < len(ranks):
            _set_rng_tensors(ranks[rank])
