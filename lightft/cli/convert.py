"""`lightft convert gguf FILE OUT_DIR`: import checkpoints from other formats into the HF folder layout."""

from __future__ import annotations

import click

from lightft.cli.common import progress_line, threads_option


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
@click.option("--force", is_flag=True, help="Replace OUT_DIR when it exists and is not empty.")
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
    from lightft.gguf import convert_gguf

    out = convert_gguf(gguf_file, out_dir, dtype=dtype, force=force, progress=progress_line("[convert] tensors"))
    click.echo(f"wrote {out}")
