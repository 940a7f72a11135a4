"""`lightft fewshot`: k-shot prompting accuracy (no training), JSON on stdout, a 0-shot vs k-shot table on stderr."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import click

from lightft.cli.common import resolve_model, threads_option
from lightft.cli.options import option_decorators
from lightft.cli.values import POSITIVE, SEED

PATH_KEYS = ("data", "pool")  # relative to the config file, as in `lightft train --config` (--model may be a name)


def load_config(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """--config FILE (TOML): its keys (the option names) become this command's defaults; flags still win."""
    if not value:
        return value
    import tomllib

    from lightft.errors import LightftError

    path = Path(value)
    if not path.is_file():
        raise LightftError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise LightftError(f"{path}: malformed TOML ({e})") from None
    names = sorted(p.name for p in ctx.command.params if p.name != "config")
    defaults: dict[str, Any] = {}
    for key, v in data.items():
        name = key.replace("-", "_")
        if name not in names:
            raise LightftError(f"{path}: unknown key {key!r}; valid keys: {', '.join(names)}")
        if name == "shots" and isinstance(v, list):
            v = ",".join(str(k) for k in v)
        if name in PATH_KEYS and isinstance(v, str) and not os.path.isabs(v):
            v = str(path.parent / v)
        defaults[name] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@click.command("fewshot")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=load_config,
              help="TOML file whose keys are these options (shots = [0, 5], select = \"relation\", ...); flags win.")
@click.option("--model", required=True, help="Model folder, run folder, or a model name (`lightft models`).")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help='JSONL of {"question","answer"[,"answers"]} or {"text","label"}.')
@click.option("--shots", default="0,1,3,5", show_default=True, help="Comma list of demonstration counts.")
@click.option("--seeds", default=5, show_default=True, type=POSITIVE, help="Demonstration draws per k (mean ± std).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="First seed.")
@click.option("--pool", type=click.Path(dir_okay=False), help="Demonstrations from this file (default: --data).")
@click.option("--template", default="qa", show_default=True,
              help="One demonstration: a preset (qa = 'Q: {question}\\nA: {answer}', terse = 'Q: ...\\nA: The answer "
                   "is {answer}', which gets short answers from chat models, 0-shot included) or your own text with "
                   "{question} and {answer}.")
@click.option("--select", type=click.Choice(["random", "relation", "nearest"]), default="random", show_default=True,
              help="Demonstrations: random from the pool; relation = random among pool items of the item's 'relation' "
                   "field (capital vs currency); nearest = the k questions closest by the model's embedding.")
@click.option("--calibrate/--no-calibrate", default=False, show_default=True,
              help="Contextual calibration of the first answer token against the same prompt with the question "
                   "replaced by 'N/A' (among the 10 likeliest first tokens).")
@click.option("--answers", type=click.Choice(["generate", "choose"]), default="generate", show_default=True,
              help="generate = the greedy answer, exact match; choose = closed set: the option (every answer of the "
                   "item's relation in --data and --pool) whose continuation the model finds likeliest.")
@click.option("--limit", type=POSITIVE, help="Evaluate only the first N items.")
@click.option("--max-new-tokens", default=16, show_default=True, type=POSITIVE)
@click.option("--batch-size", default=8, show_default=True, type=POSITIVE)
@click.option("--dtype", default="float32", show_default=True)
@threads_option
@option_decorators(["kernels"])
@click.option("--metrics-out", type=click.Path(dir_okay=False), help="Also write the JSON here.")
@click.option("--predictions-out", type=click.Path(dir_okay=False),
              help="JSONL: every prompt, the model's output, the answer read from it and the verdict, per k and seed.")
def command(model: str, data: str, shots: str, seeds: int, seed: int, pool: Optional[str], template: str,
            limit: Optional[int], max_new_tokens: int, batch_size: int, dtype: str, kernels: Optional[str],
            metrics_out: Optional[str], predictions_out: Optional[str], select: str, calibrate: bool,
            answers: str) -> None:
    """Few-shot accuracy of MODEL on DATA for each number of --shots.

    \b
    Examples:
      lightft fewshot --model smollm2 --data capitals_qa/train.jsonl --shots 0,1,3,5 --seeds 5
      lightft fewshot --model smollm2 --data eval.jsonl --pool demos.jsonl --select relation --template terse \\
          --predictions-out answers.jsonl
      lightft fewshot --model smollm2 --data qa.jsonl --shots 3 --template "Question: {question}\\nAnswer: {answer}"
    """
    from lightft.errors import LightftError
    from lightft.fewshot import run_fewshot, table
    from lightft.runs.load import chain_inputs
    from lightft.runs.safe_output import check_output_file, write_output_file

    inputs = [data, pool, model, *chain_inputs(model)]
    out = check_output_file(metrics_out, "--metrics-out", inputs)  # before any work
    predictions = check_output_file(predictions_out, "--predictions-out", [*inputs, metrics_out])
    try:
        ks = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(k < 0 for k in ks):
        raise LightftError(f"--shots {shots!r}: expected a comma list of numbers of demonstrations (0 or more), "
                           "such as 0,1,3,5")
    template = template.replace("\\n", "\n")
    report = run_fewshot(resolve_model(model), data, ks, seeds, pool, template, limit, max_new_tokens, batch_size,
                         dtype, seed, select=select, predictions_out=predictions, calibrate=calibrate,
                         kernels=kernels or "auto", answers=answers)
    click.echo(table(report), err=True)
    text = json.dumps(report, ensure_ascii=False)
    if out is not None:
        write_output_file(out, text + "\n", "--metrics-out")
    click.echo(text)
