"""Where a training run's time goes: load, data, steps, validation, checkpoints (metrics.json "time_split").

One `PhaseClock` per run. Phases nest: entering a phase pauses the one around it, so every second
is counted once, in the innermost phase. `lightft train` wraps model loading, data preparation and
`Trainer.fit` (phase "steps": the training loop, including Lightning's own work per step and data
loading); the `TimeSplit` callback marks validation inside the loop, and `AtomicCheckpointIO`
(lightft/train/checkpointing.py) marks checkpoint writes wherever they happen.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Optional

import lightning as L

PHASES = ("load", "data", "steps", "validation", "checkpoints")


class PhaseClock:
    """Accumulated wall seconds per phase (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []
        self._since = 0.0
        self._start = time.perf_counter()

    def push(self, name: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._since
        self._stack.append(name)
        self._since = now

    def pop(self, name: str) -> None:
        """Leave phase `name` (a no-op when it is not the current one: a hook that never started it)."""
        if not self._stack or self._stack[-1] != name:
            return
        now = time.perf_counter()
        self.seconds[self._stack.pop()] += now - self._since
        self._since = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.push(name)
        try:
            yield
        finally:
            self.pop(name)

    def split(self) -> dict[str, float]:
        """Seconds per phase (PHASES, then any other phase used, e.g. "probe"), `other` (what no phase
        covered: Lightning's set-up and tear-down, writing run files) and `total` since the clock started."""
        total = time.perf_counter() - self._start
        names = list(PHASES) + [name for name in self.seconds if name not in PHASES]
        out = {name: round(self.seconds.get(name, 0.0), 2) for name in names}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 2)
        out["total"] = round(total, 2)
        return out


@contextmanager
def maybe_phase(clock: Optional[PhaseClock], name: str) -> Iterator[None]:
    if clock is None:
        yield
    else:
        with clock.phase(name):
            yield


class TimeSplit(L.Callback):
    """Marks validation inside `Trainer.fit` on the run's clock."""

    def __init__(self, clock: PhaseClock):
        self.clock = clock

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.clock.push("validation")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.clock.pop("validation")
