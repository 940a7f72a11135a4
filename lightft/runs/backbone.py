"""Preparing a loaded backbone for a run: LoRA or full fine-tuning, freezing, and the speed options.

Training (lightft/train/run.py) and loading a finished run (lightft/runs/load.py) both start here, so
a run is rebuilt with exactly the adapters it was trained with.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from lightft.checkpoint import load_model
from lightft.kernels import use_kernels
from lightft.lora import apply_lora, lora_parameters, mark_trainable
from lightft.model import Transformer
from lightft.options import LoraOptions, Options
from lightft.quant import is_quantized, quantize_linears, quantize_on_load


def load_backbone(base_dir: str, opts: Options, dtype: Optional[str] = None) -> Transformer:
    """The base model in --dtype (or `dtype`); with --quantize nf4 / q4_1 its block linears become 4-bit as they
    are read, so the full-precision weights are never all in memory at once."""
    take = quantize_on_load(opts.quantize) if opts.quantize != "none" else None
    return load_model(base_dir, dtype=dtype or opts.dtype, take=take)


def prepare_backbone(backbone: Transformer, opts: Options) -> Transformer:
    """Quantise (QLoRA, unless `load_backbone` did), apply LoRA / DoRA or full fine-tuning, then the extra
    freezing options, to the backbone in place.

    It reads the adapter, lora and runtime groups of `opts` (lightft/options.py)."""
    if opts.quantize != "none" and not is_quantized(backbone):
        quantize_linears(backbone, opts.quantize)
    if opts.lora:
        lora = LoraOptions.of(opts)
        apply_lora(backbone, lora.lora_targets, r=lora.lora_r, alpha=lora.lora_alpha, dropout=lora.lora_dropout,
                   rslora=lora.rslora, dora=lora.dora)
        fp32_masters(lora_parameters(backbone))
    mode = "head" if opts.freeze == "backbone" else ("lora" if opts.lora else "full")
    mark_trainable(backbone, mode, freeze_embeddings=opts.freeze == "embeddings")
    if opts.grad_checkpointing:
        backbone.gradient_checkpointing = True
    use_kernels(backbone, opts.kernels)  # --kernels: fast paths (auto) or the reference math (off)
    if opts.compile:
        compile_blocks(backbone)
    return backbone


def fp32_masters(params: Iterable[nn.Parameter]) -> None:
    """Keep trained factors in fp32 when the base weights are bf16 / fp16 (their dtype by default).

    A bf16 LoRA factor loses AdamW updates smaller than 2^-8 of its size, and AdamW keeps its
    moments in the parameter's dtype; in fp32 both are exact, and the factors are a tiny share of
    the memory. Under autocast the matmuls still run in bf16; without it, `LoRALinear` casts its
    input to the factors' dtype and its update back to the base output's."""
    for p in params:
        if p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


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


