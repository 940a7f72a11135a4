"""`lightft fewshot`: k-shot prompting accuracy (no training), JSON on stdout, a 0-shot vs k-shot table on stderr."""

from __future__ import annotations

import json
from typing import Optional

import click

from lightft.cli.common import resolve_model, threads_option
from lightft.cli.options import option_decorators
from lightft.cli.values import POSITIVE, SEED


@click.command("fewshot")
@click.option("--model", required=True, help="Model folder, run folder, or a model name (`lightft models`).")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help='JSONL of {"question","answer"[,"answers"]} or {"text","label"}.')
@click.option("--shots", default="0,1,3,5", show_default=True, help="Comma list of demonstration counts.")
@click.option("--seeds", default=5, show_default=True, type=POSITIVE, help="Demonstration draws per k (mean ± std).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="First seed.")
@click.option("--pool", type=click.Path(dir_okay=False), help="Demonstrations from this file (default: --data).")
@click.option("--template", default="Q: {question}\nA: {answer}",
              help='One demonstration; {question} and {answer} are filled in, \\n is a newline.  '
                   '[default: "Q: {question}\\nA: {answer}"]')
@click.option("--limit", type=POSITIVE, help="Evaluate only the first N items.")
@click.option("--max-new-tokens", default=16, show_default=True, type=POSITIVE)
@click.option("--batch-size", default=8, show_default=True, type=POSITIVE)
@click.option("--dtype", default="float32", show_default=True)
@threads_option
@option_decorators(["kernels"])
@click.option("--metrics-out", type=click.Path(dir_okay=False), help="Also write the JSON here.")
def command(model: str, data: str, shots: str, seeds: int, seed: int, pool: Optional[str], template: str,
            limit: Optional[int], max_new_tokens: int, batch_size: int, dtype: str, kernels: Optional[str],
            metrics_out: Optional[str]) -> None:
    """Few-shot accuracy of MODEL on DATA for each number of --shots.

    \b
    Examples:
      lightft fewshot --model smollm2 --data capitals_qa/train.jsonl --shots 0,1,3,5 --seeds 5
      lightft fewshot --model smollm2 --data qa.jsonl --shots 3 --template "Question: {question}\\nAnswer: {answer}"
    """
    from lightft.errors import LightftError
    from lightft.fewshot import run_fewshot, table
    from lightft.runs.load import chain_inputs
    from lightft.runs.safe_output import check_output_file, write_output_file

    out = check_output_file(metrics_out, "--metrics-out", [data, pool, model, *chain_inputs(model)])  # before any work
    try:
        ks = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(k < 0 for k in ks):
        raise LightftError(f"--shots {shots!r}: expected a comma list of numbers of demonstrations (0 or more), "
                           "such as 0,1,3,5")
    template = template.replace("\\n", "\n")
    report = run_fewshot(resolve_model(model), data, ks, seeds, pool, template, limit, max_new_tokens, batch_size,
                         dtype, seed, kernels or "auto")
    click.echo(table(report), err=True)
    text = json.dumps(report, ensure_ascii=False)
    if out is not None:
        write_output_file(out, text + "\n", "--metrics-out")
    click.echo(text)
