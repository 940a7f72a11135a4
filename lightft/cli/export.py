"""`lightft export RUN --out DIR`: a trained run as merged HF-layout weights (its task class) or as a PEFT adapter."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import click

from lightft.cli.common import threads_option


def export_module(module: Any, info: dict[str, Any], out_dir: str, adapter: bool, dtype: Optional[str],
                  force: bool, say: Callable[[str], None] = print) -> Path:
    """Write a trained task module (backbone + head) to `out_dir`; `info` is its run.json record.

    Merged: the transformers task class of the head when it maps exactly (lightft/task_heads.py),
    else the plain backbone with the head in `lightft_head.safetensors` (`say` tells which, in one
    line). Adapter: the PEFT adapter, and the head in `lightft_head.safetensors`. `lightft_task.json`
    (task, task state, base model, run) goes beside either. The folder is built in a temporary
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
    backbone, task, task_state = module.backbone, info["task"], module.task_state()
    if adapter and not list(lora_layers(backbone)):
        raise LightftError(f"{info.get('run', 'the run')}: this run fine-tuned all weights (--full); "
                           "export it with --merged")
    head = {k: v.detach().contiguous() for k, v in module.state_dict().items() if k.startswith("head.")}
    tmp = make_temp_dir(out.parent, out.name)
    try:
        if adapter:
            save_adapter(backbone, tmp, base_model_name_or_path=info["base_model"])
            head_file = {k.removeprefix("head."): v for k, v in head.items()}
        else:
            tok = load_tokenizer(info["base_model"])
            pad_id = tok.pad_id if tok.pad_id is not None else tok.eos_id
            state = {**{f"backbone.{k}": v for k, v in merged_state_dict(backbone).items()}, **head}
            plan = plan_export(backbone.cfg.hf_config, task, task_state, state, pad_id)
            save_merged(backbone, tmp, base_dir=info["base_model"], dtype=dtype, plan=plan)
            head_file = plan.head_file
            if plan.unmapped:
                say(f"[export] no transformers class for this head: {plan.unmapped}; wrote the backbone "
                    f"({plan.config.get('architectures', ['?'])[0]}) and the head to {HEAD_FILE}, which lightft "
                    "eval / predict read")
            else:
                say(f"[export] {plan.config['architectures'][0]}: loads in transformers with its head")
        if head_file:
            write_atomic_safetensors(tmp / HEAD_FILE, head_file)
        write_atomic_json(tmp / TASK_FILE, {"task": task, "task_state": task_state, "base_model": info["base_model"],
                                            "run": info.get("run"), "head": HEAD_FILE if head_file else "config.json"})
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_run(run_dir: str, out_dir: str, adapter: bool, dtype: Optional[str], force: bool,
               say: Callable[[str], None] = print) -> Path:
    """`export_module` of the module a run folder holds (base weights + trained tensors)."""
    from lightft.errors import LightftError
    from lightft.train.run import is_run_dir, load_run_module

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:  # before the slow load
        raise LightftError(f"{out}: folder is not empty; choose another --out or add --force")
    module, info = load_run_module(run_dir)
    module.eval()
    return export_module(module, {**info, "run": str(Path(run_dir).resolve())}, out_dir, adapter, dtype, force, say)


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--merged/--adapter", "merged", default=True, show_default=True,
              help="Merged weights in the transformers class of the run's task (e.g. "
                   "BertForSequenceClassification), or the LoRA adapter alone in PEFT layout.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="dtype of merged weights.  [default: the run's]")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@threads_option
def command(run_dir: str, out_dir: str, merged: bool, dtype: Optional[str], force: bool) -> None:
    """Export a trained run: merged weights (transformers-readable, with the task head) or a PEFT adapter.

    A merged classify / ner / qa export loads with AutoModelForSequenceClassification,
    ...ForTokenClassification or ...ForQuestionAnswering (and transformers.pipeline); an lm /
    instruct export with AutoModelForCausalLM. A head without an exact transformers class (e.g.
    --pooling mean) is kept in lightft_head.safetensors, which lightft reads back.

    \b
    Examples:
      lightft export runs/sst2 --out exports/sst2-merged --merged
      lightft export runs/alpaca --out exports/alpaca-adapter --adapter
    """
    out = export_run(run_dir, out_dir, adapter=not merged, dtype=dtype, force=force,
                     say=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {out}")
