"""`lightft export RUN --out DIR`: a trained run as merged HF-layout weights or as a PEFT adapter."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import click


def export_run(run_dir: str, out_dir: str, adapter: bool, dtype: str | None, force: bool) -> Path:
    """Write the run's backbone (merged) or its LoRA adapter to `out_dir`, plus the task head beside it.

    The task head (e.g. a classifier) has no place in a base-model checkpoint, so it goes to
    `lightft_head.safetensors` with `lightft_task.json` (task, label names), keeping nothing behind.
    The folder is built in a temporary sibling and renamed, so a failure leaves no partial export.
    """
    from safetensors.torch import save_file

    from lightft.errors import LightftError
    from lightft.lora import lora_layers, save_adapter, save_merged
    from lightft.runs import load_run
    from lightft.runs.folder import is_run_dir

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise LightftError(f"{out}: folder is not empty; choose another --out or add --force")
    run = load_run(run_dir)
    backbone = run.backbone
    if adapter and not list(lora_layers(backbone)):
        raise LightftError(f"{run_dir}: this run fine-tuned all weights (--full); export it with --merged")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if adapter:
            save_adapter(backbone, tmp, base_model_name_or_path=run.base_model)
        else:
            save_merged(backbone, tmp, base_dir=run.base_model, dtype=dtype)
        head = {k: v.detach().contiguous() for k, v in run.head.items()}
        if head:
            save_file(head, str(tmp / "lightft_head.safetensors"))
        (tmp / "lightft_task.json").write_text(json.dumps({"task": run.task, "task_state": run.task_state,
                                                           "base_model": run.base_model}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--merged/--adapter", "merged", default=True,
              help="Merged weights in the family's HF layout (default), or the LoRA adapter alone in PEFT layout.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="dtype of merged weights.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
def command(run_dir: str, out_dir: str, merged: bool, dtype: str | None, force: bool) -> None:
    """Export a trained run: merged weights (transformers-readable) or a PEFT adapter.

    \b
    Examples:
      lightft export runs/sst2 --out exports/sst2-merged --merged
      lightft export runs/alpaca --out exports/alpaca-adapter --adapter
    """
    out = export_run(run_dir, out_dir, adapter=not merged, dtype=dtype, force=force)
    click.echo(f"wrote {out}")
