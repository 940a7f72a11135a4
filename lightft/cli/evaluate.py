"""`lightft eval TASK`: metrics of a run folder on a data file, as one JSON object.

A base model has no trained classify / ner / qa head: evaluating one is refused unless
`--untrained-head` asks for that figure explicitly (a "before" baseline with a fresh head).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from lightft.cli.common import resolve_model
from lightft.cli.options import option_decorators, resolve_options
from lightft.tasks import TASKS

EVAL_OPTIONS = ["batch_size", "eval_batch_size", "limit_val", "format", "precision", "progress", "seed",
                "doc_per_line", "template",
                "text_column", "pair_column", "label_column", "max_length", "dtype"]


@click.command("eval")
@click.argument("task", type=click.Choice(sorted(TASKS)))
@click.option("--model", required=True, help="Run folder (or, for lm / instruct / mlm, a model folder or name).")
@click.option("--data", required=True, type=click.Path(dir_okay=True), help="Data file to evaluate on.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), help="Also write the JSON metrics to this file.")
@click.option("--untrained-head", is_flag=True,
              help="classify / ner / qa on a base model: score a freshly initialised head (a baseline).")
@option_decorators(EVAL_OPTIONS)
def command(task: str, model: str, data: str, metrics_out: str | None, untrained_head: bool, **values) -> None:
    """Evaluate MODEL on DATA and print one JSON object of metrics.

    \b
    Examples:
      lightft eval classify --model runs/sst2 --data sst2/validation.tsv
      lightft eval classify --model runs/sst2 --data test.jsonl --metrics-out test_metrics.json
      lightft eval classify --model minilm --data sst2/validation.tsv --untrained-head
    """
    from lightft.train.run import evaluate

    model = resolve_model(model)
    check_model_head(task, model, untrained_head)
    opts = resolve_options(values, model=model)
    metrics = evaluate(task, model, data, opts)
    text = json.dumps(metrics)
    if metrics_out:
        Path(metrics_out).write_text(text + "\n", encoding="utf-8")
    click.echo(text)


def check_model_head(task: str, model: str, untrained_head: Optional[bool]) -> None:
    """Refuse a --model whose head would be freshly initialised, unless --untrained-head asks for it
    (None: the command has no such flag, e.g. predict).

    A run folder carries its trained head. An export carries one too (lightft/task_heads.py reads it),
    but evaluate / predict build their module from run folders only until the run loader reads
    export heads, so an export is refused by name rather than scored with a fresh head.
    """
    from lightft.errors import LightftError
    from lightft.task_heads import TASK_FILE, TRAINED_HEAD_TASKS, read_task_head
    from lightft.train.run import is_run_dir

    if is_run_dir(model) or untrained_head:
        return
    saved = read_task_head(model)
    if saved is not None and saved.task != task:
        raise LightftError(f"{model}: holds a trained {saved.task} head, not a {task} one")
    if saved is not None:
        raise LightftError(f"{model}: an export with its trained {task} head, which eval / predict do not read yet; "
                           f"use the run folder it came from ('run' in {TASK_FILE})")
    if task in TRAINED_HEAD_TASKS:
        flag = "" if untrained_head is None else (", or add --untrained-head to score a freshly initialised head "
                                                  "as a baseline")
        raise LightftError(f"{model}: a base model has no trained {task} head; give a run folder "
                           f"(lightft train {task} ... --out RUN){flag}")
