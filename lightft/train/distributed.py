"""Multi-device plumbing: the Lightning strategy for --strategy, and who does what in a multi-process run.

Lightning starts extra processes in one of two ways, and `train()` must behave in both:
- Lightning's own launcher (`--devices 2` on one machine): the first process runs the CLI, prepares
  the run folder and the tokenised data, then `trainer.fit` re-runs the same command line once per
  extra rank. Those children find `LIGHTFT_PREPARED` in their environment (set by the parent just
  before `fit`) and only read what the parent prepared.
- An external launcher (torchrun, SLURM `srun`): every rank runs the CLI at once. Rank 0 prepares,
  the others wait at a barrier of the process group, which we open early for that (Lightning finds
  it already open and uses it).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import lightning as L

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


def prepared_by_parent() -> bool:
    """True in a rank that Lightning's launcher started after the parent prepared everything."""
    return os.environ.get(PREPARED_ENV) == "1"


@contextlib.contextmanager
def children_see_prepared() -> Iterator[None]:
    """Around `fit`: ranks Lightning starts meanwhile inherit `LIGHTFT_PREPARED=1` (then it is removed,
    so a later run in this process, or a process it starts, prepares its own run)."""
    before = os.environ.get(PREPARED_ENV)
    os.environ[PREPARED_ENV] = "1"
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


@contextlib.contextmanager
def rank_zero_first(trainer: L.Trainer) -> Iterator[bool]:
    """Run the body on global rank 0 first, then on the other ranks (yields: am I rank 0?).

    Only needed (and only active) under an external launcher; otherwise rank 0 is alone here, or the
    other ranks were started after it finished (`prepared_by_parent`).
    """
    first = trainer.global_rank == 0
    if not launched_externally(trainer):
        yield first
        return
    trainer.strategy.setup_environment()  # opens the process group; Lightning reuses it in fit
    if first:
        try:
            yield True
        except BaseException:
            trainer.strategy.broadcast(False)  # release the waiting ranks, then report the error here
            raise
        trainer.strategy.broadcast(True)
    else:
        if not trainer.strategy.broadcast(None):
            raise LightftError("rank 0 could not prepare the run (its error message says why)")
        yield False
