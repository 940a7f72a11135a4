"""Stopping a training run on a signal: a checkpoint first, then a non-zero exit that says how to go on.

- SIGTERM (a scheduler's preemption, `kill`) and SIGINT (Ctrl-C) during `fit` let the optimiser step in
  progress finish (and the validation or the end of epoch that follows it, if any: Lightning resumes
  exactly only from there); then `checkpoints/last.ckpt` is saved (atomically, like every checkpoint) and
  training stops with `TrainingStopped`: the CLI prints one line with the `--resume` command and exits
  128 + the signal number (143, 130). A second signal stops at once (the last checkpoint stays).
- SLURM auto-requeue, as Lightning documents it: the cluster environment is
  `SLURMEnvironment(auto_requeue=..., requeue_signal=...)` (lightft's --requeue-signal; `sbatch
  --signal=USR1@120`). The requeue signal saves the same checkpoint, then asks SLURM to requeue the job
  (`scontrol requeue JOB`, as Lightning's own handler does); the requeued job runs the same command
  and continues the run (`requeued_restart`, used by lightft/train/run.py).
- Before `fit` (reading data, building the model) and after it (final evaluation) there is nothing to
  save: SIGTERM and SIGINT stop at once with the same message; outputs are never half-written
  (lightft/runs/safe_output.py).

Why not Lightning's own handling: on SIGTERM it ends `fit` with a SystemExit of code 0 (a preempted
job looks finished) and saves nothing unless asked; saving in the middle of gradient accumulation
would not resume exactly; and its requeue handler saves from inside the signal handler, at any
point of a step. With several processes the ranks agree at each step boundary (one all-reduce of a
flag) so that all of them save the same step and stop together.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Optional

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from lightft.errors import LightftError
from lightft.runs.checkpoint_file import LAST
from lightft.train.checkpointing import last_batch_of_epoch, validation_follows


class TrainingStopped(LightftError):
    """Training stopped on a signal; `exit_code` is 128 + the signal number, as a shell reports it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


class Signalled(BaseException):
    """Raised inside training when a stop signal is acted on (a BaseException: no `except Exception`
    on the way may swallow it). `checkpoint` is the file just saved, if any; `step` its step."""

    def __init__(self, signum: int, checkpoint: Optional[Path] = None, step: Optional[int] = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint, self.step = signum, checkpoint, step


def slurm_job_id() -> Optional[str]:
    """This SLURM job's id (array jobs: JOB_TASK, as Lightning requeues them); None outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_signal_of(name: str) -> Optional[int]:
    """The --requeue-signal under SLURM (Lightning's detection), None when off or not under SLURM; the
    same that `cluster_plugins` (lightft/train/distributed.py) gives Lightning's SLURMEnvironment."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if name == "none" or not SLURMEnvironment.detect():
        return None
    return int(signal.Signals[name])


def requeued_restart(info: dict[str, Any]) -> bool:
    """True when this process is the requeued SLURM job that wrote this run (same job id)."""
    job = slurm_job_id()
    return job is not None and info.get("slurm_job_id") == job


def requeue_job() -> str:
    """Ask SLURM to requeue this job (what Lightning's handler runs); returns what happened, in words."""
    job = slurm_job_id()
    try:
        done = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"requeueing SLURM job {job} failed ({e}); resubmit it"
    if done.returncode != 0:
        return f"requeueing SLURM job {job} failed ({done.stderr.strip()[:160]}); resubmit it"
    return f"SLURM job {job} requeued: it continues the run when it restarts"


class SignalWatch:
    """The stop signals of one training run: immediate (raise) outside `fit`, deferred to the next
    optimiser-step boundary inside it."""

    def __init__(self, requeue: Optional[int] = None):
        self.requeue = requeue
        self.signals = [signal.SIGTERM, signal.SIGINT] + ([requeue] if requeue is not None else [])
        self.received: Optional[int] = None
        self.deferred = False

    def handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.deferred and self.received is None:
            self.received = signum
            print(f"[lightft] {signal.Signals(signum).name} received: saving a checkpoint at the end of this "
                  "optimiser step, then stopping (send it again to stop at once)", file=sys.stderr)
            return
        self.received = self.received or signum
        raise Signalled(signum)

    def install(self) -> None:
        """(Re)install the handlers: Lightning puts its own SIGTERM handler in at the start of `fit`."""
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                signal.signal(s, self.handle)

    @contextlib.contextmanager
    def active(self) -> Iterator["SignalWatch"]:
        """The handlers for the duration of a training run; the previous ones afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        before = {s: signal.getsignal(s) for s in self.signals}
        self.install()
        try:
            yield self
        finally:
            self.deferred = False
            for s, h in before.items():
                signal.signal(s, h)


class StopOnSignal(Checkpoint):
    """At each optimiser-step boundary of `fit`: when a stop signal came (on any rank), save `last.ckpt`
    and raise `Signalled`. A `Checkpoint` subclass, so Lightning runs it after the other callbacks of
    the hook (the data position and RNG state it saves are then up to date, as for `PeriodicCheckpoint`)."""

    def __init__(self, watch: SignalWatch, dirpath: Path):
        self.watch, self.path = watch, Path(dirpath) / LAST
        self._step_before = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.watch.install()  # replaces Lightning's SIGTERM handler, which would end fit with exit code 0
        self.watch.deferred = True

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.watch.deferred = False

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.watch.deferred = False

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self._step_before:
            return  # gradients are still accumulating: a checkpoint here would not resume exactly
        if last_batch_of_epoch(trainer):
            return  # the epoch's end comes next: stop there, from the epoch-end checkpoint (`on_train_epoch_end`)
        if validation_follows(trainer):
            return  # stop after it (`on_validation_end`): resumed from here, Lightning would skip that validation
        self._stop_if_signalled(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and not last_batch_of_epoch(trainer):
            self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        stop = self.watch.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step (saving is collective)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            raise Signalled(self.watch.received or signal.SIGTERM, self.path, trainer.global_step)


def resume_command(task: str) -> str:
    """The command that continues this run: this command line with --resume (and without --overwrite)."""
    argv = sys.argv[1:]
    if argv[:2] == ["train", task]:
        return shlex.join(["lightft", *[a for a in argv if a not in ("--overwrite", "--resume")], "--resume"])
    return f"the same `lightft train {task}` command with --resume (without --overwrite)"
