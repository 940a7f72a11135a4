"""Inference-only weight layout: bf16 linear weights pre-packed for oneDNN, so CPU decoding is not slowed by layout.

Why: decoding one token multiplies a single row by every weight matrix, so its speed is how fast the
weights stream from memory. In fp32 PyTorch's matmul reaches the memory bandwidth (about 24 GB/s on
the 2-core benchmark machine); in bf16 it should read half the bytes, but the plain bf16 kernel
re-lays out the weight on every call and runs at about 11 GB/s, no faster than fp32. Packing each
weight once into oneDNN's blocked layout (what `torch.compile`'s CPU freezing pass does) lets the
bf16 matmul stream it at about 19 GB/s — measured in benchmarks/RESULTS.md (issue 7, workload d).

Packed layers are for inference only: they hold no parameters (nothing to train or save) and apply
where oneDNN is available, on CPU, for bf16 weights; everywhere else `pack_linears` changes nothing.
LoRA layers must be merged first (`lightft.lora.merge_lora`), so packing sees plain weights.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

from lightft.model import Transformer


def packing_available(weight: torch.Tensor) -> bool:
    """oneDNN packing helps bf16 weights on CPU; other dtypes/devices keep PyTorch's own kernels."""
    return weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and _packed_ops_work()


@functools.lru_cache(maxsize=None)
def _packed_ops_work() -> bool:
    """The packing ops are PyTorch internals (what torch.compile's CPU freezing uses): check that this
    build has them and that they compute a small product right, else fall back to plain matmuls."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
        x = torch.ones(1, 4, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return bool(torch.equal(y, x @ w.t()))
    except (AttributeError, RuntimeError, TypeError):
        return False


class PackedLinear(nn.Module):
    """y = x Wᵀ + b with W stored in oneDNN's blocked layout (an opaque tensor: not a parameter).

    Given several linears with the same input, packs them as one (their outputs concatenated): one
    call streams all their weights, which is what decoding is bound by.
    """

    def __init__(self, *linears: nn.Linear):
        super().__init__()
        self.in_features = linears[0].in_features
        self.out_features = sum(lin.out_features for lin in linears)
        weight = torch.cat([lin.weight.detach() for lin in linears])  # (sum of outs, in)
        # batch-size hint 1: the layout is tuned for one-row (decoding) calls; prefill still works
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        biases = [lin.bias for lin in linears]
        self.bias: Optional[torch.Tensor] = None
        if any(b is not None for b in biases):
            self.bias = torch.cat([b.detach() if b is not None else lin.weight.new_zeros(lin.out_features)
                                   for b, lin in zip(biases, linears)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def pack_linears(model: Transformer) -> int:
    """Replace the blocks' and the LM head's linear layers by packed copies in place; returns how many linears.

    q/k/v (Llama) and gate/up are packed as one matrix each, so a Llama block makes four matmuls.

    Does nothing (returns 0) where packing does not apply. Refuses unmerged LoRA layers: their update
    would be lost.
    """
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    if weight is None or not packing_available(weight):
        return 0
    if any(getattr(m, "merged", True) is False for m in model.modules()):  # an adapter (LoRA) not merged
        raise ValueError("pack_linears: merge LoRA layers first (lightft.lora.merge_lora)")  # checked before any change
    count = 0
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        if not attn.fused_qkv:  # Llama: q, k, v read the same input -> one packed matmul
            attn.qkv_proj = PackedLinear(attn.q_proj, attn.k_proj, attn.v_proj)
            del attn.q_proj, attn.k_proj, attn.v_proj
            attn.fused_qkv = True
            count += 3
        if mlp.gated:  # gate and up likewise; MLP.forward splits the result
            mlp.gate_up_proj = PackedLinear(mlp.gate_proj, mlp.up_proj)
            del mlp.gate_proj, mlp.up_proj
            count += 2
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedLinear(child))
                    count += 1
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = PackedLinear(model.lm_head)
        count += 1
    model.eval()
    return count
