"""`lightft predict TASK`: JSONL predictions of a trained run (or an export of one) on a data file; for
classify, `--model A,B` predicts with several runs as one ensemble (lightft/ensemble.py)."""

from __future__ import annotations

import json

import click

from lightft.cli.common import model_members, output_guarded_inputs, resolve_model
from lightft.cli.evaluate import check_model_head
from lightft.cli.options import eval_command_options, per_task_group, resolve_options

OUTPUT = {
    "classify": '{"line", "label", "probabilities"}',
    "ner": ('{"line", "text", "tags", "entities": [{"text", "type", "start", "end"}]}, where start/end are '
            'character offsets into "text", the sentence\'s words joined by single spaces (JSONL input needs only '
            '"tokens"; "tags" are ignored)'),
    "qa": '{"id", "answer", "score", "top_k": [...]}',
}


def make_command(task: str) -> click.Command:
    @click.command(task, help=f"""Predict with a trained {task} run: one JSON object per input record
    ({OUTPUT.get(task, "see the README")}).

    \b
    Examples:
      lightft predict {task} --model runs/{task} --data records > predictions.jsonl
      lightft predict {task} --model runs/{task} --data records --output predictions.jsonl
    """)
    @eval_command_options(task, "Run folder made by `lightft train`, or an export of one."
                          + (" Several, comma-separated: an ensemble (their probabilities averaged)."
                             if task == "classify" else ""),
                          "Data file to predict on.", "--output", "Write JSONL here instead of stdout.")
    def command(model: str, data: str, output: str | None, **values) -> None:
        from lightft.ensemble import predict_ensemble
        from lightft.evaluate import predict
        from lightft.runs.safe_output import check_output_file, write_output_file

        members = model_members(model)
        out = check_output_file(output, "--output", output_guarded_inputs(data, members))  # before any work
        members = [resolve_model(m) for m in members]
        for member in members:
            check_model_head(task, member, untrained_head=None)
        opts = resolve_options(values, model=members[0])
        if len(members) > 1:
            records = predict_ensemble(task, members, data, opts)
        else:
            records = predict(task, members[0], data, opts)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if out is not None:
            write_output_file(out, lines, "--output")
        else:
            click.echo(lines, nl=False)

    return command


command = per_task_group("predict", "JSONL predictions of a trained run or an export.", make_command)
