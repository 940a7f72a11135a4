"""`lightft export RUN --out DIR | --gguf FILE`: a trained run as merged HF-layout weights (its task class), a
PEFT adapter, or GGUF."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import click

from lightft.cli.common import threads_option


def export_trained(backbone: Any, head: dict[str, Any], task: str, task_state: dict[str, Any], base_model: str,
                   out_dir: str, adapter: bool, dtype: Optional[str], force: bool,
                   say: Callable[[str], None] = print, run: Optional[str] = None,
                   options: Optional[dict[str, Any]] = None) -> Path:
    """Write a trained backbone and its task head (tensors named without `head.`) to `out_dir`.

    Merged: the transformers task class of the head when it maps exactly (lightft/task_heads.py),
    else the plain backbone with the head in `lightft_head.safetensors` (`say` tells which, in one
    line). Adapter: the PEFT adapter, and the head in `lightft_head.safetensors`. `lightft_task.json`
    (task, task state, the run's options, base model, run) goes beside either: eval / predict of the
    export read the data as the run did. The folder is built in a temporary
    sibling and renamed, so a failure leaves no partial export.
    """
    from lightft.checkpoint import make_temp_dir, write_atomic_json, write_atomic_safetensors
    from lightft.errors import LightftError
    from lightft.lora import lora_layers, merged_state_dict, save_adapter, save_merged
    from lightft.task_heads import HEAD_FILE, TASK_FILE, plan_export
    from lightft.tokenizer import load_tokenizer

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise LightftError(f"{out}: folder is not empty; choose another --out or add --force")
    if adapter and not list(lora_layers(backbone)):
        raise LightftError(f"{run or 'the run'}: this run fine-tuned all weights (--full); export it with --merged")
    head = {k: v.detach().contiguous() for k, v in head.items()}
    tmp = make_temp_dir(out.parent, out.name)
    try:
        if adapter:
            save_adapter(backbone, tmp, base_model_name_or_path=base_model)
            head_file = head
        else:
            tok = load_tokenizer(base_model)
            pad_id = tok.pad_id if tok.pad_id is not None else tok.eos_id
            state = {**{f"backbone.{k}": v for k, v in merged_state_dict(backbone).items()},
                     **{f"head.{k}": v for k, v in head.items()}}
            plan = plan_export(backbone.cfg.hf_config, task, task_state, state, pad_id)
            save_merged(backbone, tmp, base_dir=base_model, dtype=dtype, plan=plan)
            head_file = plan.head_file
            if plan.unmapped:
                say(f"[export] no transformers class for this head: {plan.unmapped}; wrote the backbone "
                    f"({plan.config.get('architectures', ['?'])[0]}) and the head to {HEAD_FILE}, which lightft "
                    "eval / predict read")
            else:
                say(f"[export] {plan.config['architectures'][0]}: loads in transformers with its head")
        if head_file:
            write_atomic_safetensors(tmp / HEAD_FILE, head_file)
        write_atomic_json(tmp / TASK_FILE, {"task": task, "task_state": task_state, "options": options or {},
                                            "base_model": base_model, "run": run,
                                            "head": HEAD_FILE if head_file else "config.json"})
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def merge_dtype(run_dir: str) -> Optional[str]:
    """The dtype a merged export loads the run's base weights in: float32, so that ΔW is added to the
    checkpoint's own values (a bf16 copy of the base, `--dtype auto`'s choice for frozen weights,
    would round small updates away). An NF4 run keeps its dtype: its 4-bit codes were made from it."""
    from lightft.runs.folder import read_run

    return None if read_run(run_dir)["options"].get("quantize", "none") != "none" else "float32"


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
    backbone = load_run(run_dir, dtype=merge_dtype(run_dir)).backbone
    state = hf_state_dict(backbone, state=merged_state_dict(backbone))
    return write_gguf(backbone.cfg, state, base, out, kind, name=Path(run_dir).name)


def export_run(run_dir: str, out_dir: str, adapter: bool, dtype: Optional[str], force: bool,
               say: Callable[[str], None] = print) -> Path:
    """`export_trained` of a run folder, rebuilt by `load_run` (base weights + trained tensors)."""
    from lightft.errors import LightftError
    from lightft.runs import load_run
    from lightft.runs.folder import is_run_dir

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:  # before the slow load
        raise LightftError(f"{out}: folder is not empty; choose another --out or add --force")
    r = load_run(run_dir, dtype=None if adapter else merge_dtype(run_dir))
    return export_trained(r.backbone, r.head, r.task, r.task_state, r.base_model, out_dir, adapter, dtype, force, say,
                          run=str(Path(run_dir).resolve()), options=r.options.to_dict())


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write (HF layout or adapter).")
@click.option("--gguf", "gguf_file", type=click.Path(dir_okay=False),
              help="Write one GGUF file instead (llama family; for llama.cpp / Ollama).")
@click.option("--type", "kind", type=click.Choice(["f32", "f16", "bf16", "q8_0"]),
              help="GGUF tensor type (default f16; norms stay f32).")
@click.option("--merged/--adapter", "merged", default=True, show_default=True,
              help="Merged weights in the transformers class of the run's task (e.g. "
                   "BertForSequenceClassification), or the LoRA adapter alone in PEFT layout.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="dtype of merged weights.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out / an existing --gguf file.")
@threads_option
def command(run_dir: str, out_dir: str | None, gguf_file: str | None, kind: str | None, merged: bool,
            dtype: str | None, force: bool) -> None:
    """Export a trained run: merged weights (transformers-readable, with the task head), a PEFT adapter, or a
    GGUF file.

    A merged classify / ner / qa export loads with AutoModelForSequenceClassification,
    ...ForTokenClassification or ...ForQuestionAnswering (and transformers.pipeline); an lm /
    instruct export with AutoModelForCausalLM. A head without an exact transformers class (e.g.
    --pooling mean) is kept in lightft_head.safetensors, which lightft reads back.

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
        out = export_run(run_dir, out_dir, adapter=not merged, dtype=dtype, force=force,
                         say=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {out}")
