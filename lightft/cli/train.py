"""`lightft train TASK`: fine-tune a model on a dataset into a run folder (one subcommand per task, so
`lightft train TASK --help` lists the common options plus TASK's own)."""

from __future__ import annotations

import json

import click

from lightft.cli.common import resolve_model
from lightft.cli.options import option_decorators, per_task_group, resolve_options, task_fields

EXAMPLES = {
    "classify": ("lightft train classify --model minilm --train sst2/train.tsv --val sst2/validation.tsv "
                 "--out runs/sst2",
                 "lightft train classify --model minilm --train reviews.csv --full --epochs 2 --lr 3e-5 --out runs/full"),
    "ner": ("lightft train ner --model minilm --train conll2003/train.txt --val conll2003/valid.txt --out runs/ner",),
    "qa": ("lightft train qa --model minilm --train squad/train.json --val squad/validation.json --out runs/squad",
           "lightft train qa --model minilm --init runs/squad --train bioasq/train.json --out runs/bioasq"),
    "mlm": ("lightft train mlm --model minilm --train abstracts.txt --full --out runs/mlm",),
    "lm": ("lightft train lm --model smollm2 --train abstracts.txt --doc-per-line --out runs/medical",),
    "instruct": ("lightft train instruct --model smollm2 --train alpaca/train.json --packing --out runs/alpaca",),
}


def make_command(task: str) -> click.Command:
    examples = "\n".join("  " + e for e in EXAMPLES[task])

    @click.command(task, help=f"Fine-tune MODEL on TRAIN for {task}, writing checkpoints, logs and metrics to OUT."
                              f"\n\n\b\nExamples:\n{examples}\n  lightft train {task} --config recipe.toml --resume")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False),
                  help="YAML or TOML file with option keys; flags win.")
    @option_decorators(task_fields(task))
    def command(config_file: str | None, **values) -> None:
        opts = resolve_options(values, config_file)
        opts.model = resolve_model(opts.model)  # a wrong --model is reported before Lightning's seconds of imports
        from lightning.pytorch.utilities import rank_zero_only

        from lightft.train.run import train

        metrics = train(task, opts, inputs=(config_file,))
        if rank_zero_only.rank == 0:  # one JSON line, however many processes trained
            click.echo(json.dumps(metrics))

    return command


command = per_task_group("train", "Fine-tune a model for TASK.", make_command)
