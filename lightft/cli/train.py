"""`lightft train TASK`: fine-tune a model on a dataset into a run folder."""

from __future__ import annotations

import json

import click

from lightft.cli.common import resolve_model
from lightft.cli.options import option_decorators, resolve_options
from lightft.tasks import TASKS


@click.command("train")
@click.argument("task", type=click.Choice(sorted(TASKS)))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML file with option keys; flags win.")
@option_decorators()
def command(task: str, config_file: str | None, **values) -> None:
    """Fine-tune MODEL on TRAIN for TASK, writing checkpoints, logs and metrics to OUT.

    \b
    Examples:
      lightft train classify --model minilm --train sst2/train.tsv --val sst2/validation.tsv --out runs/sst2
      lightft train classify --model minilm --train reviews.csv --full --epochs 2 --lr 3e-5 --out runs/full
      lightft train classify --config recipe.toml --resume
    """
    from lightft.train.run import train

    opts = resolve_options(values, config_file)
    opts.model = resolve_model(opts.model)
    metrics = train(task, opts)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # one JSON line, however many processes trained
        click.echo(json.dumps(metrics))
