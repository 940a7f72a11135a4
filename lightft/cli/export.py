"""`lightft export RUN --out DIR | --gguf FILE`: a trained run as merged HF-layout weights (its task class), a
PEFT adapter, or GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import click

from lightft.cli.common import threads_option


def write_export(tmp: Path, backbone: Any, head: dict[str, Any], task: str, task_state: dict[str, Any],
                 base_model: str, adapter: bool, dtype: Optional[str], say: Callable[[str], None],
                 run: Optional[str], options: Optional[dict[str, Any]]) -> None:
    """Write a trained backbone and its task head (tensors named without `head.`) into the empty folder `tmp`.

    Merged: the transformers task class of the head when it maps exactly (lightft/task_heads.py),
    else the plain backbone with the head in `lightft_head.safetensors` (`say` tells which, in one
    line). Adapter: the PEFT adapter, and the head in `lightft_head.safetensors`. `lightft_task.json`
    (task, task state, the run's options, base model, run) goes beside either: eval / predict of the
    export read the data as the run did.
    """
    from lightft.checkpoint import write_atomic_json, write_atomic_safetensors
    from lightft.errors import LightftError
    from lightft.lora import lora_layers, merged_state_dict, save_adapter, save_merged
    from lightft.task_heads import HEAD_FILE, TASK_FILE, plan_export
    from lightft.tokenizer import load_tokenizer

    if adapter and not list(lora_layers(backbone)):
        raise LightftError(f"{run or 'the run'}: this run fine-tuned all weights (--full); export it with --merged")
    head = {k: v.detach().contiguous() for k, v in head.items()}
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


def writing_export(out_dir: str, force: bool, inputs: list[str]) -> Any:
    """The export folder through lightft/runs/safe_output.py: a temporary sibling put in place at the end
    (a failure leaves no partial export); `force` replaces only an earlier export, never an input
    (the run, the runs it started from, their base model) or a folder holding one."""
    from lightft.runs.safe_output import writing_folder

    return writing_folder(out_dir, "export", replace=force, inputs=inputs, flag="--out", replace_flag="--force")


def export_trained(backbone: Any, head: dict[str, Any], task: str, task_state: dict[str, Any], base_model: str,
                   out_dir: str, adapter: bool, dtype: Optional[str], force: bool,
                   say: Callable[[str], None] = print, run: Optional[str] = None,
                   options: Optional[dict[str, Any]] = None) -> Path:
    """`write_export` of a trained backbone and head into `out_dir` (see `writing_export`)."""
    from lightft.runs.load import chain_inputs

    with writing_export(out_dir, force, [base_model, *chain_inputs(run)]) as tmp:
        write_export(tmp, backbone, head, task, task_state, base_model, adapter, dtype, say, run, options)
    return Path(out_dir)


def merge_dtype(run_dir: str) -> Optional[str]:
    """The dtype a merged export loads the run's base weights in: float32, so that ΔW is added to the
    checkpoint's own values (a bf16 copy of the base, `--dtype auto`'s choice for frozen weights,
    would round small updates away). A QLoRA run keeps its dtype: its 4-bit codes were made from it."""
    from lightft.runs.folder import read_run

    return None if read_run(run_dir)["options"].get("quantize", "none") != "none" else "float32"


def export_gguf(run_dir: str, out_file: str, kind: str, force: bool) -> Path:
    """Write the run's merged backbone (LoRA / DoRA folded in, a 4-bit base dequantised) as one GGUF file.

    Through lightft/runs/safe_output.py: checked first (never an input of the run), locked, written
    beside and renamed at the end; `force` replaces only an existing GGUF file."""
    from lightft.checkpoint import hf_state_dict, read_model_config
    from lightft.errors import LightftError
    from lightft.gguf_export import check_exportable, write_gguf
    from lightft.lora import merged_state_dict
    from lightft.runs import load_run
    from lightft.runs.folder import is_run_dir, read_run
    from lightft.runs.load import chain_inputs
    from lightft.runs.safe_output import check_output_file, writing_file

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    out = check_output_file(out_file, "--gguf", chain_inputs(run_dir))
    base = read_run(run_dir)["base_model"]
    check_exportable(read_model_config(base), run_dir)  # a BERT run stops here, before loading anything
    with writing_file(out, "--gguf", replace=force, ours=is_gguf, what="a GGUF file") as tmp:
        backbone = load_run(run_dir, dtype=merge_dtype(run_dir)).backbone
        state = hf_state_dict(backbone, state=merged_state_dict(backbone))
        write_gguf(backbone.cfg, state, base, tmp, kind, name=Path(run_dir).name)
    return out


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def export_run(run_dir: str, out_dir: str, adapter: bool, dtype: Optional[str], force: bool,
               say: Callable[[str], None] = print) -> Path:
    """`write_export` of a run folder, rebuilt by `load_run` (base weights + trained tensors), with the output
    checked and locked before the slow load."""
    from lightft.errors import LightftError
    from lightft.runs import load_run
    from lightft.runs.folder import is_run_dir
    from lightft.runs.load import chain_inputs

    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no run.json); export takes the --out of `lightft train`")
    with writing_export(out_dir, force, chain_inputs(run_dir)) as tmp:
        r = load_run(run_dir, dtype=None if adapter else merge_dtype(run_dir))
        write_export(tmp, r.backbone, r.head, r.task, r.task_state, r.base_model, adapter, dtype, say,
                     run=str(Path(run_dir).resolve()), options=r.options.to_dict())
    return Path(out_dir)


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder to write (HF layout or adapter).")
@click.option("--gguf", "gguf_file", type=click.Path(dir_okay=False),
              help="Write one GGUF file instead (llama family; for llama.cpp / Ollama).")
@click.option("--type", "kind", type=click.Choice(["f32", "f16", "bf16", "q8_0", "q4_1"]),
              help="GGUF tensor type (default f16; norms stay f32).")
@click.option("--merged/--adapter", "merged", default=True, show_default=True,
              help="Merged weights in the transformers class of the run's task (e.g. "
                   "BertForSequenceClassification), or the LoRA adapter alone in PEFT layout.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="dtype of merged weights.")
@click.option("--force", is_flag=True, help="Replace an earlier export at --out / an existing GGUF file at --gguf.")
@threads_option
def command(run_dir: str, out_dir: str | None, gguf_file: str | None, kind: str | None, merged: bool,
            dtype: str | None, force: bool) -> None:
    """Export a trained run: merged weights (transformers-readable, with the task head), a PEFT adapter, or a
    GGUF file.

    A merged classify / ner / qa export loads with AutoModelForSequenceClassification,
    ...ForTokenClassification or ...ForQuestionAnswering (and transformers.pipeline); an lm /
    instruct export with AutoModelForCausalLM. A head without an exact transformers class (e.g.
    --pooling mean) is kept in lightft_head.safetensors, which lightft reads back.

    A QLoRA run (--quantize nf4 or q4_1) exports full-precision merged weights: its base dequantised plus ΔW.

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
