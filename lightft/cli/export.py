"""`lightft export RUN --out DIR | --gguf FILE`: a trained run as merged HF-layout weights, a PEFT adapter, or GGUF."""

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


def export_gguf(run_dir: str, out_file: str, kind: str, force: bool) -> Path:
    """Write the run's merged backbone (LoRA / DoRA folded in, an NF4 base dequantised) as one GGUF file."""
    from lightft.checkpoint import hf_state_dict, read_model_config
    from lightft.errors import LightftError
    from lightft.gguf_export import check_exportable, write_gguf
    from lightft.lora import merged_state_dict
    from lightft.runs import load_run
    from lightft.runs.folder import is_run_dir, read_run

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    out = Path(out_file)
    if out.is_dir() or (out.exists() and not force):
        raise LightftError(f"{out}: already exists; choose another --gguf file or add --force")
    base = read_run(run_dir)["base_model"]
    check_exportable(read_model_config(base), run_dir)  # a BERT run stops here, before loading anything
    backbone = load_run(run_dir).backbone
    state = hf_state_dict(backbone, state=merged_state_dict(backbone))
    return write_gguf(backbone.cfg, state, base, out, kind, name=Path(run_dir).name)


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write (HF layout or adapter).")
@click.option("--gguf", "gguf_file", type=click.Path(dir_okay=False),
              help="Write one GGUF file instead (llama family; for llama.cpp / Ollama).")
@click.option("--type", "kind", type=click.Choice(["f32", "f16", "bf16", "q8_0"]),
              help="GGUF tensor type (default f16; norms stay f32).")
@click.option("--merged/--adapter", "merged", default=True,
              help="Merged weights in the family's HF layout (default), or the LoRA adapter alone in PEFT layout.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="dtype of merged weights.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out / an existing --gguf file.")
def command(run_dir: str, out_dir: str | None, gguf_file: str | None, kind: str | None, merged: bool,
            dtype: str | None, force: bool) -> None:
    """Export a trained run: merged weights (transformers-readable), a PEFT adapter, or a GGUF file.

    A QLoRA run (--quantize nf4) exports full-precision merged weights: its base dequantised plus ΔW.

    \b
    Examples:
      lightft export runs/sst2 --out exports/sst2-merged --merged
      lightft export runs/alpaca --out exports/alpaca-adapter --adapter
      lightft export runs/alpaca --gguf exports/alpaca.gguf --type q8_0
    """
    from lightft.errors import LightftError

    if (out_dir is None) == (gguf_file is None):
        raise LightftError("give exactly one of --out DIR (HF layout or adapter) and --gguf FILE")
    if gguf_file is not None:
        if not merged or dtype:
            raise LightftError("--gguf writes merged weights in the --type given; drop --adapter / --dtype")
        out = export_gguf(run_dir, gguf_file, kind or "f16", force)
    else:
        if kind:
            raise LightftError("--type sets the GGUF tensor type; use it with --gguf FILE (--dtype for --out)")
        out = export_run(run_dir, out_dir, adapter=not merged, dtype=dtype, force=force)
    click.echo(f"wrote {out}")
