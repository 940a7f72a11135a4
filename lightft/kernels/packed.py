"""Inference-only weight layout: bf16 linear weights pre-packed for oneDNN, so CPU decoding is not slowed by layout.

Equals: the model's own linear layers (tests/test_kernel_packed.py: same logits within bf16
rounding, same greedy tokens).

Why: decoding one token multiplies a single row by every weight matrix, so its speed is how fast the
weights stream from memory. In fp32 PyTorch's matmul reaches the memory bandwidth (about 24 GB/s on
the 2-core benchmark machine); in bf16 it should read half the bytes, but the plain bf16 kernel
re-lays out the weight on every call and runs at about 11 GB/s, no faster than fp32. Packing each
weight once into oneDNN's blocked layout (what `torch.compile`'s CPU freezing pass does) lets the
bf16 matmul stream it at about 19 GB/s — measured in benchmarks/RESULTS.md (issue 7, workload d).

Packed layers are for inference only: they hold no parameters (nothing to train or save) and apply
where oneDNN is available, on CPU, for bf16 weights; everywhere else `pack_linears` changes nothing.
LoRA layers must be merged first (`lightft.lora.merge_lora`), so packing sees plain weights.
q/k/v and gate/up are first stacked by the model itself (`Attention.fuse_qkv`, `MLP.fuse_gate_up`),
so each group streams its weights in one call.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

from lightft.model import Transformer


def _pack(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) weight -> oneDNN's opaque blocked layout; batch-size hint 1: tuned for one-row (decoding)
    calls, prefill still works."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def _packed_matmul(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


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
        return bool(torch.equal(_packed_matmul(x, _pack(w), None), x @ w.t()))
    except (AttributeError, RuntimeError, TypeError):
        return False


class PackedLinear(nn.Module):
    """y = x Wᵀ + b with W stored in oneDNN's blocked layout (an opaque tensor: not a parameter)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = _pack(weight.detach())
        self.bias = bias.detach() if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _packed_matmul(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


class PackedRows(nn.Module):
    """Outputs start:end of a `PackedLinear`, sharing its packed weight.

    What stays of a stacked layer's parts (q_proj, k_proj, ...) once the stacked weight is packed: no
    module disappears and nothing is stored twice. Decoding does not call it (the stacked layer
    computes every part at once); a caller that does gets the part's outputs.
    """

    def __init__(self, whole: PackedLinear, start: int, end: int):
        super().__init__()
        self.packed, self.bias, self.outputs = whole.packed, whole.bias, slice(start, end)
        self.in_features, self.out_features = whole.in_features, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _packed_matmul(x, self.packed, self.bias)[..., self.outputs]

    def extra_repr(self) -> str:
        return f"rows {self.outputs.start}:{self.outputs.stop} of a packed stacked weight"


def _is_plain(module: nn.Module) -> bool:
    """Computes x Wᵀ + b and nothing more: an nn.Linear, or a LoRA layer whose update is merged in."""
    return isinstance(module, nn.Linear) and getattr(module, "merged", True) is not False


def _pack_stacked(parent: nn.Module, stacked: str, parts: tuple[str, ...]) -> int:
    """Pack `parent.<stacked>` (a StackedLinear); its parts become row slices of the packed weight."""
    layer = getattr(parent, stacked)
    packed = PackedLinear(layer.weight, layer.bias)
    setattr(parent, stacked, packed)
    start = 0
    for name in parts:
        end = start + getattr(parent, name).out_features
        setattr(parent, name, PackedRows(packed, start, end))
        start = end
    return len(parts)


def pack_linears(model: Transformer) -> int:
    """Replace the blocks' and the LM head's linear layers by packed copies in place; returns how many linears.

    q/k/v (Llama) and gate/up are stacked and packed as one matrix each, so a Llama block makes four matmuls.

    Does nothing (returns 0) where packing does not apply. Refuses unmerged LoRA layers: their update
    would be lost.
    """
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    if weight is None or not packing_available(weight):
        return 0
    if any(isinstance(m, nn.Linear) and not _is_plain(m) for m in model.modules()):
        raise ValueError("pack_linears: merge LoRA layers first (lightft.lora.merge_lora)")  # checked before any change
    count = 0
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        if attn.qkv_proj is None:  # Llama: q, k, v read the same input -> one packed matmul
            attn.fuse_qkv()
            count += _pack_stacked(attn, "qkv_proj", ("q_proj", "k_proj", "v_proj"))
        if mlp.gated:  # gate and up likewise
            mlp.fuse_gate_up()
            count += _pack_stacked(mlp, "gate_up_proj", ("gate_proj", "up_proj"))
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, PackedLinear(child.weight, child.bias))
                    count += 1
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = PackedLinear(model.lm_head.weight, None)
        count += 1
    model.eval()
    return count
