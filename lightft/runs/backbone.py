"""Preparing a loaded backbone for a run: LoRA or full fine-tuning, freezing, and the speed options.

Training (lightft/train/run.py) and loading a finished run (lightft/runs/load.py) both start here, so
a run is rebuilt with exactly the adapters it was trained with.
"""

from __future__ import annotations

from lightft.lora import apply_lora, mark_trainable
from lightft.model import Transformer
from lightft.options import LoraOptions, Options


def prepare_backbone(backbone: Transformer, opts: Options) -> Transformer:
    """Apply LoRA or full fine-tuning, then the extra freezing options, to the backbone in place.

    It reads the adapter, lora and runtime groups of `opts` (lightft/options.py)."""
    if opts.lora:
        lora = LoraOptions.of(opts)
        apply_lora(backbone, lora.lora_targets, r=lora.lora_r, alpha=lora.lora_alpha, dropout=lora.lora_dropout,
                   rslora=lora.rslora)
    mode = "head" if opts.freeze == "backbone" else ("lora" if opts.lora else "full")
    mark_trainable(backbone, mode, freeze_embeddings=opts.freeze == "embeddings")
    if opts.grad_checkpointing:
        backbone.gradient_checkpointing = True
    if opts.compile:
        compile_blocks(backbone)
    return backbone


def compile_blocks(backbone: Transformer) -> Transformer:
    """`torch.compile` each transformer block in place ("regional" compilation).

    The blocks are identical modules, so they share one compiled graph: compile time is that of one
    block, not of the whole model. What compilation buys on CPU is fusion of the elementwise work
    around the matmuls (RMSNorm in fp32, RoPE, SiLU·up, residual adds, bf16 casts), which in eager
    mode costs more time than the matmuls themselves (see benchmarks/RESULTS.md, issue 7). Masks,
    RoPE tables, the LM head and the loss stay eager.
    """
    for block in backbone.layers:
        block.compile()
    return backbone


