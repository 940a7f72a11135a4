"""Multi-device plumbing: the Lightning strategy for --strategy, and who does what in a multi-process run.

Lightning starts extra processes in one of two ways, and `train()` must behave in both:
- Lightning's own launcher (`--devices 2` on one machine): the first process runs the CLI, prepares
  the run folder and the tokenised data, then `trainer.fit` re-runs the same command line once per
  extra rank. Those children find `LIGHTFT_PREPARED` in their environment (set by the parent just
  before `fit`) and only read what the parent prepared.
- An external launcher (torchrun, SLURM `srun`): every rank runs the CLI at once. Rank 0 prepares,
  the others wait at a barrier of the process group, which we open early for that (Lightning finds
  it already open and uses it).
Rank 0 may turn a run into a resume (a requeued SLURM job continues its run): the other ranks learn it
from the broadcast at that barrier, or from `LIGHTFT_PREPARED=resume`.
`--num-nodes N` needs a process started on every node; `check_nodes` refuses a run that would wait
for nodes nothing starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from typing import Any, Iterator, Optional

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from lightft.errors import LightftError
from lightft.options import Options

PREPARED_ENV = "LIGHTFT_PREPARED"


def build_strategy(opts: Options) -> Any:
    """--strategy as Lightning understands it; ddp and fsdp get the settings lightft needs.

    ddp: `find_unused_parameters` only under --full, where some weights (e.g. the BERT pooler when
    pooling by [CLS], an untied LM head in classification) get no gradient; with LoRA or a frozen
    backbone every trainable tensor is used, and DDP's extra graph walk is skipped.
    fsdp: one FSDP unit per transformer block (`lightft.model.Block`); `use_orig_params` (Lightning's
    default) lets frozen and trainable tensors share a unit, as LoRA needs.
    """
    name = opts.strategy
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=not opts.lora and opts.freeze != "backbone")
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from lightft.model import Block

        return FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block} if opts.grad_checkpointing
                            else None, state_dict_type="full")
    return name


def cluster_plugins(opts: Options, for_training: bool) -> list[Any]:
    """Under SLURM, Lightning's cluster environment with lightft's --requeue-signal (Lightning's documented
    `SLURMEnvironment(auto_requeue=..., requeue_signal=...)`; the signal itself: lightft/train/signals.py)."""
    if not for_training or not SLURMEnvironment.detect():
        return []
    off = opts.requeue_signal == "none"
    return [SLURMEnvironment(auto_requeue=not off, requeue_signal=None if off else signal.Signals[opts.requeue_signal])]


def check_nodes(trainer: L.Trainer, opts: Options) -> None:
    """--num-nodes above 1 without a launcher (SLURM, torchrun) or hand-set MASTER_ADDR / NODE_RANK would
    wait forever for nodes nothing starts: refuse it; otherwise say what the run waits for."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if opts.num_nodes <= 1 or env is None or env.creates_processes_externally or prepared_by_parent():
        return
    missing = [v for v in ("MASTER_ADDR", "NODE_RANK") if v not in os.environ]
    if missing:
        raise LightftError(f"--num-nodes {opts.num_nodes}: nothing starts the other nodes (no SLURM srun or torchrun, "
                           f"and {' / '.join(missing)} not set), so training would wait for them forever; on one "
                           "machine use --devices N with --num-nodes 1; across machines start the command on every "
                           "node with srun (scripts/slurm_train.sbatch) or torchrun (scripts/launch_torchrun.sh)")
    print(f"[distributed] node {os.environ['NODE_RANK']} of {opts.num_nodes}: waiting for all {trainer.world_size} "
          f"processes to join at {os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT', '(Lightning default)')}; "
          "every node must run this command with its own NODE_RANK", file=sys.stderr)


def prepared_by_parent() -> bool:
    """True in a rank that Lightning's launcher started after the parent prepared everything."""
    return os.environ.get(PREPARED_ENV) in ("1", "resume")


def parent_resumed() -> bool:
    """True in such a rank when the parent continues the run (--resume, or a requeued SLURM job)."""
    return os.environ.get(PREPARED_ENV) == "resume"


@contextlib.contextmanager
def children_see_prepared(resume: bool = False) -> Iterator[None]:
    """Around `fit`: ranks Lightning starts meanwhile inherit `LIGHTFT_PREPARED=1` (or `resume`), then it is
    removed, so a later run in this process, or a process it starts, prepares its own run."""
    before = os.environ.get(PREPARED_ENV)
    os.environ[PREPARED_ENV] = "resume" if resume else "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PREPARED_ENV, None)
        else:
            os.environ[PREPARED_ENV] = before


def launched_externally(trainer: L.Trainer) -> bool:
    """All ranks started at once by torchrun / SLURM (not by Lightning from this process)."""
    return trainer.world_size > 1 and trainer.strategy.cluster_environment.creates_processes_externally \
        and not prepared_by_parent()


@dataclasses.dataclass
class Shared:
    """What the body of `rank_zero_first` learns on rank 0 and the other ranks then see."""

    first: bool
    resume: bool = False


@contextlib.contextmanager
def rank_zero_first(trainer: L.Trainer) -> Iterator[Shared]:
    """Run the body on global rank 0 first, then on the other ranks (yields `Shared`: am I rank 0, and
    what rank 0 decided).

    Only needed (and only active) under an external launcher; otherwise rank 0 is alone here, or the
    other ranks were started after it finished (`prepared_by_parent`).
    """
    shared = Shared(first=trainer.global_rank == 0)
    if not launched_externally(trainer):
        yield shared
        return
    trainer.strategy.setup_environment()  # opens the process group; Lightning reuses it in fit
    if shared.first:
        try:
            yield shared
        except BaseException:
            trainer.strategy.broadcast(None)  # release the waiting ranks, then report the error here
            raise
        trainer.strategy.broadcast({"resume": shared.resume})
    else:
        decided = trainer.strategy.broadcast(None)
        if decided is None:
            raise LightftError("rank 0 could not prepare the run (its error message says why)")
        shared.resume = decided["resume"]
        yield shared
