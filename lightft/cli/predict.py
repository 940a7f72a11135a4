"""`lightft predict TASK`: JSONL predictions of a trained run on a data file."""

from __future__ import annotations

import json

import click

from lightft.cli.common import resolve_model
from lightft.cli.evaluate import EVAL_OPTIONS, check_model_head
from lightft.cli.options import option_decorators, resolve_options
from lightft.tasks import TASKS


@click.command("predict")
@click.argument("task", type=click.Choice(sorted(TASKS)))
@click.option("--model", required=True, help="Run folder made by `lightft train`.")
@click.option("--data", required=True, type=click.Path(dir_okay=True), help="Data file to predict on.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write JSONL here instead of stdout.")
@option_decorators(EVAL_OPTIONS)
def command(task: str, model: str, data: str, output: str | None, **values) -> None:
    """Predict with a trained run: one JSON object per input record.

    classify: {"line", "label", "probabilities"}. ner: {"line", "text", "tags", "entities": [{"text", "type",
    "start", "end"}]}, where start/end are character offsets into "text", the sentence's words joined by
    single spaces (JSONL input needs only "tokens"; "tags" are ignored).

    \b
    Examples:
      lightft predict classify --model runs/sst2 --data reviews.jsonl > predictions.jsonl
      lightft predict ner --model runs/conll --data sentences.jsonl --output entities.jsonl
    """
    from lightft.train.run import predict

    model = resolve_model(model)
    check_model_head(task, model, untrained_head=None)
    opts = resolve_options(values, model=model)
    records = predict(task, model, data, opts)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(lines)
    else:
        click.echo(lines, nl=False)
