"""Quantised frozen base weights (NF4 for QLoRA): which layers, at load or afterwards, and back.

    model = load_model(path, dtype="bfloat16", take=quantize_on_load())   # never holds the bf16 blocks at once
    # or: quantize_linears(load_model(path))                               # quantise a loaded model in place
    apply_lora(model, "attn", r=8)                                         # LoRA wraps the NF4 layers
    dequantize_linears(model)                                              # plain nn.Linear again (full precision)

What is quantised: every linear layer inside the transformer blocks (q, k, v, o, gate, up, down;
GPT-2's fused c_attn; BERT's dense layers), as QLoRA does. Embeddings, norms, the LM head and
BERT's pooler keep the dtype they were loaded in. The math lives in lightft/quant/nf4.py.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lightft.quant.nf4 import (  # noqa: F401
    BLOCK_SIZE,
    NF4Linear,
    NF4Weight,
    nf4_bits_per_weight,
    nf4_levels,
    nf4_linear,
)

SCHEMES = ("none", "nf4")


def _is_block_linear(path: str, module: nn.Module) -> bool:
    return path.startswith("layers.") and isinstance(module, nn.Linear) and not isinstance(module, NF4Linear)


def _swap(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def quantize_linears(model: nn.Module, double_quant: bool = True) -> int:
    """Replace every block linear of a loaded model by an `NF4Linear` in place; returns how many.

    LoRA must come after (it wraps the quantised layers), so a model with LoRA layers is refused.
    """
    if any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("quantize_linears: quantise the base model before applying LoRA")
    paths = [n for n, m in model.named_modules() if _is_block_linear(n, m)]
    for path in paths:
        _swap(model, path, NF4Linear.from_linear(model.get_submodule(path), double_quant=double_quant))
    return len(paths)


def quantize_on_load(double_quant: bool = True) -> Callable[[nn.Module, str, torch.Tensor], bool]:
    """A `take` hook for `load_model`: each block linear's weight becomes NF4 the moment it is read."""

    def take(model: nn.Module, name: str, tensor: torch.Tensor) -> bool:
        path, _, leaf = name.rpartition(".")
        if leaf != "weight":
            return False
        module = model.get_submodule(path)
        if not _is_block_linear(path, module):
            return False
        _swap(model, path, NF4Linear(NF4Weight(tensor, double_quant=double_quant), module.bias))
        return True  # the bias (if any) is still loaded into NF4Linear.bias under its own name

    return take


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, NF4Weight) for m in model.modules())


def dequantize_linears(model: nn.Module) -> int:
    """Turn every (unwrapped) `NF4Linear` back into a plain `nn.Linear` holding the dequantised weight."""
    count = 0
    for path, module in list(model.named_modules()):
        if isinstance(module, NF4Linear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            linear.weight = nn.Parameter(module.dequantized_weight(), requires_grad=False)
            linear.bias = module.bias
            _swap(model, path, linear)
            count += 1
    return count


def quantized_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes the NF4 weights take, bytes the same weights took in the dtype they were quantised from)."""
    held = full = 0
    for m in model.modules():
        if isinstance(m, NF4Weight):
            held += m.nbytes()
            full += m.numel * torch.empty(0, dtype=m.dtype).element_size()
    return held, full
