"""Quantised frozen base weights (QLoRA): which layers, at load or afterwards, in which scheme, and back.

    model = load_model(path, dtype="bfloat16", take=quantize_on_load())   # never holds the bf16 blocks at once
    # or: quantize_linears(load_model(path), "q4_1")                       # quantise a loaded model in place
    apply_lora(model, "attn", r=8)                                         # LoRA wraps the 4-bit layers
    dequantize_linears(model)                                              # plain nn.Linear again (full precision)

What is quantised: every linear layer inside the transformer blocks (q, k, v, o, gate, up, down;
GPT-2's fused c_attn; BERT's dense layers), as QLoRA does. Embeddings, norms, the LM head and
BERT's pooler keep the dtype they were loaded in. Two schemes: "nf4" (QLoRA's NormalFloat-4,
lightft/quant/nf4.py) and "q4_1" (llama.cpp's block-affine format, lightft/quant/q4_1.py: lossless for a
base converted from a Q4_1 GGUF); what they share is in lightft/quant/blockwise.py.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lightft.precision import QUANT_SCHEMES
from lightft.quant.blockwise import BlockQuantWeight, QuantLinear, quant_linear  # noqa: F401
from lightft.quant.nf4 import NF4Weight, nf4_bits_per_weight, nf4_levels  # noqa: F401
from lightft.quant.q4_1 import Q4_1Weight, q4_1_bits_per_weight  # noqa: F401


def _check_scheme(scheme: str) -> None:
    if scheme not in QUANT_SCHEMES[1:]:  # the --quantize choices (torch-free in lightft/precision.py for the CLI)
        raise ValueError(f"unknown quantisation scheme {scheme!r}; choose one of {', '.join(QUANT_SCHEMES[1:])}")


def quantized_weight(scheme: str, weight: torch.Tensor, double_quant: bool = True) -> BlockQuantWeight:
    """`weight` in 4 bits under `scheme` ("nf4" or "q4_1"; `double_quant` is NF4's)."""
    _check_scheme(scheme)
    return NF4Weight(weight, double_quant=double_quant) if scheme == "nf4" else Q4_1Weight(weight)


def _is_block_linear(path: str, module: nn.Module) -> bool:
    return path.startswith("layers.") and isinstance(module, nn.Linear) and not isinstance(module, QuantLinear)


def _swap(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def quantize_linears(model: nn.Module, scheme: str = "nf4", double_quant: bool = True) -> int:
    """Replace every block linear of a loaded model by a `QuantLinear` in place; returns how many.

    LoRA must come after (it wraps the quantised layers), so a model with LoRA layers is refused.
    """
    _check_scheme(scheme)
    if any(hasattr(m, "lora_A") for m in model.modules()):
        raise ValueError("quantize_linears: quantise the base model before applying LoRA")
    paths = [n for n, m in model.named_modules() if _is_block_linear(n, m)]
    for path in paths:
        linear = model.get_submodule(path)
        _swap(model, path, QuantLinear(quantized_weight(scheme, linear.weight, double_quant), linear.bias))
    return len(paths)


def quantize_on_load(
    scheme: str = "nf4", double_quant: bool = True
) -> Callable[[nn.Module, str, torch.Tensor, torch.dtype], bool]:
    """A `take` hook for `load_model`: each block linear's weight becomes 4-bit the moment it is read,
    quantised from the checkpoint's own values (a Q4_1-converted fp32 checkpoint then keeps its codes
    exactly, even in a bf16 run) and dequantised later in the model's `dtype`."""
    _check_scheme(scheme)

    def take(model: nn.Module, name: str, tensor: torch.Tensor, dtype: torch.dtype) -> bool:
        path, _, leaf = name.rpartition(".")
        if leaf != "weight":
            return False
        module = model.get_submodule(path)
        if not _is_block_linear(path, module):
            return False
        qweight = quantized_weight(scheme, tensor, double_quant)
        qweight.dtype = dtype  # what dequantize() returns by default: the dtype the model is loaded in
        _swap(model, path, QuantLinear(qweight, module.bias))
        return True  # the bias (if any) is still loaded into QuantLinear.bias under its own name

    return take


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, BlockQuantWeight) for m in model.modules())


def dequantize_linears(model: nn.Module) -> int:
    """Turn every (unwrapped) `QuantLinear` back into a plain `nn.Linear` holding the dequantised weight."""
    count = 0
    for path, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            linear.weight = nn.Parameter(module.dequantized_weight(), requires_grad=False)
            linear.bias = module.bias
            _swap(model, path, linear)
            count += 1
    return count


def quantized_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes the 4-bit weights take, bytes the same weights took in the dtype they were quantised from)."""
    held = full = 0
    for m in model.modules():
        if isinstance(m, BlockQuantWeight):
            held += m.nbytes()
            full += m.numel * torch.empty(0, dtype=m.dtype).element_size()
    return held, full
