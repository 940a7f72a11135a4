"""The mechanism every 4-bit scheme shares: packed codes, a level table, per-block scale (and offset).

A 4-bit block-wise weight is stored as one 4-bit code per value (two per byte), cut into blocks of
`block_size` values along the flattened weight; each block has a scale and, for affine schemes, an
offset. Dequantising any scheme is the same three steps:

    value = levels[code] * scale[block] (+ offset[block])

What differs between schemes is only where the 16 levels sit and how a block's scale (and offset) are
chosen: NF4 (lightft/quant/nf4.py) uses quantiles of N(0, 1) and the block's absmax; Q4_1
(lightft/quant/q4_1.py, llama.cpp's format) uses the levels 0..15, the block's minimum as offset and
(max - min) / 15 as scale. A subclass says which (`levels`, `scales`, `offsets`); this module holds
the rest: packing, the generic dequantisation, and a linear layer whose weight is dequantised just in
time.

Just-in-time dequantisation. `QuantLinear` keeps only the packed codes and block statistics. Its
forward pass dequantises W into a temporary, multiplies, and drops it; the backward pass (the input
gradient dX = dY · W, the only one a frozen weight needs) dequantises again. A custom autograd
Function makes sure autograd never saves the dequantised W for backward, so between steps only the
4-bit form exists. The price is two dequantisations per layer and step (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_BLOCKS = 1 << 14  # blocks dequantised per pass (up to 1M values): bounded temporaries, cache friendly


def blocks_of(flat: torch.Tensor, size: int, repeat_last: bool = False) -> torch.Tensor:
    """(n,) -> (n_blocks, size), padded at the end with zeros (or with copies of the last value, which
    leaves the last block's minimum and maximum as they were)."""
    pad = (-flat.numel()) % size
    if pad:
        fill = flat[-1:].expand(pad) if repeat_last else flat.new_zeros(pad)
        flat = torch.cat([flat, fill])
    return flat.view(-1, size)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15, (n,) with n even -> (n/2,) bytes; the even-indexed code in the high nibble."""
    codes = codes.reshape(-1).to(torch.uint8)
    return (codes[0::2] << 4) | codes[1::2]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`: (n/2,) bytes -> (n,) uint8 codes."""
    return torch.stack([packed >> 4, packed & 15], dim=1).view(-1)  # (n/2, 2) -> (n,)


@functools.lru_cache(maxsize=None)
def _byte_table(levels: tuple[float, ...]) -> torch.Tensor:
    """(256, 2) fp32: the two levels a packed byte stands for (high nibble first)."""
    table = torch.tensor(levels, dtype=torch.float32)
    byte = torch.arange(256)
    return torch.stack([table[byte >> 4], table[byte & 15]], dim=1)


def float_bits(x: torch.Tensor) -> torch.Tensor:
    """A floating tensor kept as its raw bits (int16 / int32 of the same width).

    Block statistics are stored like this because a model-wide `.to(torch.bfloat16)` (what Lightning's
    bf16-true precision does) converts every floating buffer and would round them."""
    return x.view({2: torch.int16, 4: torch.int32}[x.element_size()])


class BlockQuantWeight(nn.Module):
    """A frozen weight stored as 4-bit codes in blocks (buffers `codes` + the scheme's block statistics).

    Holds no parameters, so optimisers and `requires_grad` never see it. `dequantize()` rebuilds the
    weight; `linear(x, bias)` computes x Wᵀ + b without keeping W (see `quant_linear`). Subclasses set
    `scheme` and implement `levels`, `scales` and (affine schemes) `offsets`, and fill `codes` with
    `pack_nibbles` of their block codes.
    """

    scheme = "?"

    def __init__(self, weight: torch.Tensor, block_size: int):
        super().__init__()
        if block_size % 2:
            raise ValueError(f"block size {block_size}: two codes per byte need an even block size")
        self.shape = tuple(weight.shape)
        self.numel = weight.numel()
        self.block_size = block_size
        self.dtype = weight.dtype  # what `dequantize()` returns by default (the dtype the weight came in)

    def levels(self) -> tuple[float, ...]:
        """The 16 values a code stands for, before the block's scale (and offset)."""
        raise NotImplementedError

    def scales(self) -> torch.Tensor:
        """Per-block scale, fp32 (n_blocks,)."""
        raise NotImplementedError

    def offsets(self) -> Optional[torch.Tensor]:
        """Per-block offset added after scaling, fp32 (n_blocks,), or None (symmetric schemes)."""
        return None

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The weight in `dtype` (default: the dtype it was quantised from), shape as the original."""
        with torch.profiler.record_function(f"{self.scheme}.dequantize"):  # named in profiles (benchmarks/RESULTS.md)
            return self._dequantize(dtype or self.dtype)

    def _dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        table = _byte_table(self.levels()).to(self.codes.device)
        scales, offsets = self.scales(), self.offsets()
        half = self.block_size // 2  # bytes per block
        packed = self.codes.view(-1, half)  # (n_blocks, bytes per block)
        out = torch.empty(packed.shape[0], self.block_size, dtype=dtype, device=self.codes.device)
        for s in range(0, packed.shape[0], CHUNK_BLOCKS):  # chunks: fp32 temporaries stay small
            e = s + CHUNK_BLOCKS
            # one row of the byte table per byte (index_select with int32 indices: ~5x faster than t[idx])
            values = table.index_select(0, packed[s:e].reshape(-1).int()).view(-1, self.block_size)  # (chunk, block)
            values.mul_(scales[s:e, None])
            if offsets is not None:
                values.add_(offsets[s:e, None])
            out[s:e] = values
        return out.view(-1)[: self.numel].view(self.shape)

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return quant_linear(x, self, bias)

    def nbytes(self) -> int:
        """Bytes held: packed codes + the block statistics."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def describe(self) -> str:
        return f"block={self.block_size}"

    def extra_repr(self) -> str:
        bits = 8 * self.nbytes() / self.numel
        return f"{self.scheme}, shape={self.shape}, {self.describe()}, {bits:.3f} bits/weight"


class _QuantLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b with W dequantised in forward and again in backward; nothing dequantised is saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, qweight: BlockQuantWeight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.qweight = qweight  # the module (4-bit buffers), not a dequantised tensor
        ctx.bias_grad = bias is not None and bias.requires_grad
        return F.linear(x, qweight.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        grad_x = grad_y @ ctx.qweight.dequantize(grad_y.dtype) if ctx.needs_input_grad[0] else None  # (…, in)
        grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0) if ctx.bias_grad else None
        return grad_x, None, grad_b


def quant_linear(x: torch.Tensor, qweight: BlockQuantWeight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x Wᵀ + b for a 4-bit weight, W dequantised just in time (the plain reference path)."""
    if not torch.is_grad_enabled() or not (x.requires_grad or (bias is not None and bias.requires_grad)):
        return F.linear(x, qweight.dequantize(x.dtype), bias)  # inference: no backward to plan for
    return _QuantLinearFunction.apply(x, qweight, bias)


class QuantLinear(nn.Linear):
    """A frozen `nn.Linear` whose weight is stored in 4 bits (`qweight`, any scheme); `weight` is None.

    It is still an `nn.Linear` (same in/out features and `bias`, and LoRA can wrap it: see
    lightft/lora/layer.py), but the weight exists only as `qweight`; `dequantized_weight()`
    rebuilds it in full precision.
    """

    def __init__(self, qweight: BlockQuantWeight, bias: Optional[nn.Parameter] = None):
        out_features, in_features = qweight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        self.register_parameter("weight", None)
        self.qweight = qweight
        self.bias = bias
        if bias is not None:
            bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qweight.linear(x, self.bias)

    def dequantized_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.qweight.dequantize(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.qweight.scheme}")
