"""The training sampler: one seeded order per epoch, split across ranks, resumable mid-epoch.

Why our own sampler: (1) the order of an epoch depends only on (seed, epoch), so 1 process with
batch 2B sees exactly the same global batches as 2 DDP processes with batch B (rank r takes every
W-th index, so the k-th batches of all ranks together are the k-th global batch); (2) a run resumed
from a mid-epoch checkpoint skips the batches it already trained on instead of seeing the start of
the epoch twice. Lightning leaves a `DistributedSampler` subclass alone (no re-wrapping) and calls
`set_epoch`; the `ResumableLoader` exposes `state_dict` / `load_state_dict`, which Lightning saves
in and restores from its checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler


def random_order(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def length_grouped_order(lengths: list[int], batch_size: int, seed: int, window_batches: int = 50) -> list[int]:
    """Shuffle, sort within windows of `window_batches` batches by length (little padding), then shuffle the
    batches so training does not see lengths in a ramp. `batch_size` is the global batch (all ranks).

    The window trades padding against how alike a batch's examples are: 50 (transformers' megabatches)
    leaves ~5 % padding on SST-2 but fills each batch with examples of one length class; smaller windows
    keep batches more mixed (see --group-window)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * window_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]


class ResumableSampler(DistributedSampler):
    """Per-epoch seeded order (`order_fn(seed + epoch)`), rank r of W takes positions r, r+W, ...

    The order is padded by wrapping around so every rank gets the same number of samples (as
    `DistributedSampler` does). `consumed` (in samples of this rank) is kept up to date by the
    training loop (see `lightft.train.callbacks.DataPosition`); after `load_state_dict`, the first
    iteration of the saved epoch starts after the consumed samples.
    """

    def __init__(self, size: int, order_fn: Callable[[int], list[int]], seed: int, num_replicas: int = 1,
                 rank: int = 0):
        # DistributedSampler's own init needs a dataset; we only need its length
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size, self.order_fn = size, order_fn
        self.consumed = 0
        self._resume: Optional[dict[str, int]] = None

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = self.order_fn(self.seed + self.epoch)
        order += order[: self.total_size - len(order)]  # pad to a multiple of the world size
        mine = order[self.rank : self.total_size : self.num_replicas]
        skip = 0
        if self._resume is not None and self._resume["epoch"] == self.epoch:
            skip = self._resume["consumed"]
        self._resume = None
        self.consumed = skip
        return iter(mine[skip:])

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed = 0
        super().set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "size": self.size,
                "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        from lightft.errors import LightftError

        for key in ("seed", "size", "num_replicas"):
            if state.get(key) != getattr(self, key):
                raise LightftError(f"cannot resume the data position: the checkpoint was made with {key}="
                                   f"{state.get(key)}, this run has {getattr(self, key)}; resume with the same "
                                   "--seed, data and number of devices")
        self._resume = {"epoch": int(state["epoch"]), "consumed": int(state["consumed"])}


class ResumableLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints (the `_Stateful` protocol)."""

    sampler: ResumableSampler

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def mark_consumed(self, batches: int) -> None:
        """Called after each training micro-batch: `batches` done so far in this epoch on this rank."""
        self.sampler.consumed = min(batches * (self.batch_size or 1), self.sampler.num_samples)
