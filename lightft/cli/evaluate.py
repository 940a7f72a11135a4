"""`lightft eval TASK`: metrics of a run folder (or a base model) on a data file, as one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lightft.cli.options import eval_command_options, per_task_group, resolve_options


def make_command(task: str) -> click.Command:
    @click.command(task, help=f"""Evaluate MODEL on DATA for {task} and print one JSON object of metrics.

    \b
    Examples:
      lightft eval {task} --model runs/{task} --data validation-file
      lightft eval {task} --model runs/{task} --data test-file --metrics-out test_metrics.json
    """)
    @eval_command_options(task, "Run folder (or base model folder: an untrained head, as a baseline).",
                          "Data file to evaluate on.", "--metrics-out", "Also write the JSON metrics to this file.")
    def command(model: str, data: str, metrics_out: str | None, **values) -> None:
        from lightft.evaluate import evaluate

        opts = resolve_options(values, model=model)
        metrics = evaluate(task, model, data, opts)
        text = json.dumps(metrics)
        if metrics_out:
            Path(metrics_out).write_text(text + "\n", encoding="utf-8")
        click.echo(text)

    return command


command = per_task_group("eval", "Evaluate a run (or a base model) on a data file.", make_command)
