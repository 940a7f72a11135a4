"""`lightft plot RUN [RUN ...]`: training curves of one or more runs in one PNG (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="PNG file to write [default: RUN/curves.png for one run, ./curves.png for several].")
@click.option("--metric", "metrics", multiple=True,
              help="Task metric to draw (a logged column such as val_accuracy); repeat for several "
                   "[default: every logged val_* metric besides the loss].")
def command(runs: tuple[str, ...], out: Optional[str], metrics: tuple[str, ...]) -> None:
    """Draw loss, learning rate, tokens/s and the task metric against steps for RUNS, overlaid.

    \b
    Examples:
      lightft plot runs/sst2
      lightft plot runs/sst2-full runs/sst2-lora --out compare.png
      lightft plot runs/conll --metric val_f1
    """
    from lightft.report.plot import curves_figure, save_png
    from lightft.report.runfiles import read_run_files

    read = [read_run_files(r) for r in runs]
    target = Path(out) if out else (read[0].path / "curves.png" if len(read) == 1 else Path("curves.png"))
    save_png(curves_figure(read, list(metrics) or None), target, inputs=[r.path for r in read])
    click.echo(str(target))
