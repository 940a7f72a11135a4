"""`lightft eval TASK`: metrics of a run folder (or a base model) on a data file, as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lightft.cli.options import option_decorators, resolve_options
from lightft.tasks import TASKS

EVAL_OPTIONS = ["batch_size", "eval_batch_size", "limit_val", "format", "precision", "progress", "seed",
                "doc_per_line", "template",
                "text_column", "pair_column", "label_column", "max_length", "dtype"]


@click.command("eval")
@click.argument("task", type=click.Choice(sorted(TASKS)))
@click.option("--model", required=True, help="Run folder (or base model folder: an untrained head, as a baseline).")
@click.option("--data", required=True, type=click.Path(dir_okay=True), help="Data file to evaluate on.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), help="Also write the JSON metrics to this file.")
@option_decorators(EVAL_OPTIONS)
def command(task: str, model: str, data: str, metrics_out: str | None, **values) -> None:
    """Evaluate MODEL on DATA and print one JSON object of metrics.

    \b
    Examples:
      lightft eval classify --model runs/sst2 --data sst2/validation.tsv
      lightft eval classify --model runs/sst2 --data test.jsonl --metrics-out test_metrics.json
    """
    from lightft.train.run import evaluate

    opts = resolve_options(values, model=model)
    metrics = evaluate(task, model, data, opts)
    text = json.dumps(metrics)
    if metrics_out:
        Path(metrics_out).write_text(text + "\n", encoding="utf-8")
    click.echo(text)
