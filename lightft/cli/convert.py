"""`lightft convert gguf FILE OUT_DIR`: import checkpoints from other formats into the HF folder layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import click

from lightft.cli.common import progress_line, threads_option

if TYPE_CHECKING:
    from lightft.gguf import Progress

PathLike = Union[str, os.PathLike]


def convert_gguf(gguf_path: PathLike, out_dir: PathLike, dtype: str = "float32", force: bool = False,
                 progress: Optional[Progress] = None) -> Path:
    """Convert a GGUF file into the model folder `out_dir`; returns it.

    Written into a temporary sibling and put in place at the end (lightft/runs/safe_output.py): a
    failure leaves nothing, and `force` replaces only a model folder an earlier conversion wrote
    (never the folder holding the GGUF file, nor any folder lightft did not write).
    """
    from lightft.gguf import open_gguf, write_converted
    from lightft.runs.safe_output import writing_folder

    open_gguf(gguf_path)  # not a readable GGUF file: say so before taking the output
    with writing_folder(out_dir, "model", replace=force, inputs=[gguf_path], flag="OUT_DIR",
                        replace_flag="--force") as tmp:
        write_converted(gguf_path, tmp, dtype, progress)
    return Path(out_dir)


@click.group("convert")
def command() -> None:
    """Convert a checkpoint from another format into a Hugging Face-layout folder lightft loads.

    \b
    Examples:
      lightft convert gguf SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2
      lightft convert gguf model.gguf models/m --dtype bfloat16 --force
    """


@command.command("gguf")
@click.argument("gguf_file", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Dtype of the dequantised weights (float32 keeps the dequantised values exactly).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR when an earlier `lightft convert` wrote it.")
@threads_option
def gguf(gguf_file: str, out_dir: str, dtype: str, force: bool) -> None:
    """Convert a llama-family GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 tensors) into OUT_DIR.

    Writes model.safetensors (dequantised), config.json, generation_config.json, tokenizer.json,
    tokenizer_config.json (with the chat template) and special_tokens_map.json. Nothing is left
    behind if the conversion fails.

    \b
    Examples:
      lightft convert gguf SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2
      lightft convert gguf model.gguf models/m --dtype bfloat16 --force
      lightft inspect models/smollm2
    """
    out = convert_gguf(gguf_file, out_dir, dtype=dtype, force=force, progress=progress_line("[convert] tensors"))
    click.echo(f"wrote {out}")
