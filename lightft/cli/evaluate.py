"""`lightft eval TASK`: metrics of a run folder or an export on a data file, as one JSON object.

A base model has no trained classify / ner / qa head: evaluating one is refused unless
`--untrained-head` asks for that figure explicitly (a "before" baseline with a fresh head).
For classify, `--model A,B` scores several trained runs as one ensemble (lightft/ensemble.py).
"""

from __future__ import annotations

import json
from typing import Optional

import click

from lightft.cli.common import model_members, output_guarded_inputs, resolve_model
from lightft.cli.options import eval_command_options, per_task_group, resolve_options

# Tasks whose head is trained from scratch: scoring a base model on them measures an untrained head.
TRAINED_HEAD_TASKS = ("classify", "ner", "qa")


def make_command(task: str) -> click.Command:
    baseline = (f"\n      lightft eval {task} --model minilm --data validation-file --untrained-head"
                if task in TRAINED_HEAD_TASKS else "")

    @click.command(task, help=f"""Evaluate MODEL on DATA for {task} and print one JSON object of metrics.

    \b
    Examples:
      lightft eval {task} --model runs/{task} --data validation-file
      lightft eval {task} --model runs/{task} --data test-file --metrics-out test_metrics.json{baseline}
    """)
    @eval_command_options(task, "Run folder, or an export of one (`lightft export`)"
                          + ("." if task in TRAINED_HEAD_TASKS else "; or a model folder or name.")
                          + (" Several, comma-separated: an ensemble (their probabilities averaged)."
                             if task == "classify" else ""),
                          "Data file to evaluate on.", "--metrics-out", "Also write the JSON metrics to this file.")
    def command(model: str, data: str, metrics_out: str | None, untrained_head: bool = False, **values) -> None:
        from lightft.named_models import check_model_value

        members = model_members(model)
        for member in members:
            check_model_value(member)  # a typo in --model is reported before torch's import
        from lightft.errors import LightftError
        from lightft.runs.safe_output import check_output_file, write_output_file

        out = check_output_file(metrics_out, "--metrics-out", output_guarded_inputs(data, members))  # before any work
        if untrained_head and len(members) > 1:
            raise LightftError(f"--untrained-head scores one base model; --model {model} names {len(members)}")
        members = [resolve_model(m) for m in members]
        for member in members:  # an ensemble member needs a trained head (no --untrained-head hint)
            check_model_head(task, member, untrained_head if len(members) == 1 else None)
        opts = resolve_options(values, model=members[0])
        from lightft.ensemble import evaluate_ensemble  # after the checks: a wrong --model fails before Lightning
        from lightft.evaluate import evaluate

        if len(members) > 1:
            metrics = evaluate_ensemble(task, members, data, opts)
        else:
            metrics = evaluate(task, members[0], data, opts)
        text = json.dumps(metrics)
        if out is not None:
            write_output_file(out, text + "\n", "--metrics-out")
        click.echo(text)

    if task in TRAINED_HEAD_TASKS:
        command = click.option("--untrained-head", is_flag=True,
                               help="Score a base model with a freshly initialised head (a baseline figure).")(command)
    return command


def check_model_head(task: str, model: str, untrained_head: Optional[bool]) -> None:
    """Refuse a base model for a task whose head it lacks, unless --untrained-head asks for a fresh one
    (None: the command has no such flag, e.g. predict). Run folders and exports carry their head."""
    from lightft.errors import LightftError
    from lightft.runs.folder import is_run_dir
    from lightft.task_heads import read_task_head

    if task not in TRAINED_HEAD_TASKS or untrained_head or is_run_dir(model) or read_task_head(model) is not None:
        return
    flag = ("" if untrained_head is None
            else ", or add --untrained-head to score a freshly initialised head as a baseline")
    raise LightftError(f"{model}: a base model has no trained {task} head; give a run folder "
                       f"(lightft train {task} ... --out RUN) or an export of one{flag}")


command = per_task_group("eval", "Evaluate a run or an export on a data file.", make_command)
