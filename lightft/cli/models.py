"""`lightft models`: the model names --model accepts, where each lives, and how to install a missing one."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of text.")
def command(as_json: bool) -> None:
    """List the named models (--model minilm, --model smollm2): installed or not, folder, install line.

    Any other --model is a folder: a Hugging Face-layout model, a merged export, or a run.

    \b
    Examples:
      lightft models
      lightft inspect minilm
      lightft generate --model smollm2 --prompt "Name three primary colours."
    """
    from lightft.named_models import NAMED_MODELS, status

    rows = [status(m) for m in NAMED_MODELS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']}: {r['about']}")
        if not r["installed"]:
            click.echo(f"  installed: no; install with: {r['install']}")
        else:
            click.echo(f"  installed: yes ({r['package']})")
        if "gguf" in r:
            click.echo(f"  gguf:      {r['gguf'] or '-'}")
            state = "converted" if r["ready"] else "converted on first use"
            click.echo(f"  folder:    {r['folder']} ({state})")
        else:
            click.echo(f"  folder:    {r['folder'] if r['installed'] else '-'}")
        click.echo(f"  install:   {r['install']}" + (f"  ({r['note']})" if r.get("note") else ""))
