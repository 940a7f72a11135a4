"""What several commands share: the --threads option, --model names, and progress lines on stderr."""

from __future__ import annotations

from typing import Callable, Optional

import click

THREADS_HELP = ("torch CPU threads (default: torch's choice, one per core). On a machine busy with other jobs, "
                "--threads 1 is often several times faster.")


def set_threads(threads: Optional[int]) -> None:
    """torch.set_num_threads, importing torch only when a number is given."""
    if threads is None:
        return
    if threads < 1:
        raise click.BadParameter(f"{threads} is not a number of threads (at least 1)", param_hint="'--threads'")
    import torch

    torch.set_num_threads(threads)


threads_option = click.option("--threads", type=int, default=None, expose_value=False, help=THREADS_HELP,
                              callback=lambda ctx, param, value: set_threads(value))


def progress_line(label: str) -> Callable[[int, int], None]:
    """A `(done, total)` callback for stderr: one `label done/total` line redrawn on a terminal, else a
    line at each quarter (a log file gets no carriage-return clutter)."""
    import sys

    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            click.echo(f"\r{label} {done}/{total}", err=True, nl=done >= total)
        elif done == total or (4 * done) // total != (4 * (done - 1)) // total:
            click.echo(f"{label} {done}/{total}", err=True)

    return show


def resolve_model(model: Optional[str]) -> str:
    """`--model` as a folder: a path, or a named model (lightft/named_models.py; converted once if needed)."""
    from lightft.named_models import resolve_model as resolve

    return resolve(model, say=lambda line: click.echo(line, err=True), progress=progress_line("[convert] tensors"))


def model_members(model: str) -> list[str]:
    """`--model A,B` (an ensemble of runs, lightft/ensemble.py) -> [A, B]; one run -> [it]. A path that
    exists as written is one model, commas and all."""
    from pathlib import Path

    from lightft.options import comma_list

    if "," not in model or Path(model).exists():
        return [model]
    return comma_list(model)


def output_guarded_inputs(data: str, members: list[str]) -> list[str]:
    """What an output file must never replace: the data file, each --model and every folder its weights are
    read from (lightft/runs/load.py `chain_inputs`)."""
    from lightft.runs.load import chain_inputs

    return [data, *members, *[path for m in members for path in chain_inputs(m)]]
