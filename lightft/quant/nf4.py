"""NormalFloat-4 (NF4) weights for QLoRA: quantise, pack, dequantise, and a linear layer on top.

The idea, for readers learning it. QLoRA (Dettmers et al., 2023, arXiv:2305.14314) keeps the
frozen base weights in 4 bits and trains LoRA factors in 16/32 bits on top. Four bits give 16
values ("levels"); the question is where to put them.

Why the levels are quantiles of N(0, 1). Trained weights are close to normally distributed. Cut a
weight matrix into small blocks, divide each block by its largest |value| (its "absmax"), and every
value lands in [-1, 1] with a bell-shaped histogram. An information-theoretically optimal code for
such data gives each level the same share of the values: level i sits at the quantile
Q((i + ½) / 16) of the distribution, so each of the 16 bins holds 1/16 of the weights. NF4 takes the
quantiles of the standard normal N(0, 1), rescaled so the extreme levels are exactly -1 and +1.

Two details make the table asymmetric:
- an exact 0 is wanted (zero padding and zero weights stay exact), and 16 levels cannot be
  symmetric around 0 *and* contain 0. So the negative side gets 7 levels and the positive side 8:
  the positive levels are the quantiles Q(p) for 8 probabilities p spaced evenly from `OFFSET` down
  to ½ (½ itself is the 0 level, counted once), the negative ones -Q(p) for 7 probabilities likewise;
- Q(1) is infinite, so the outermost probability is pulled in to
  OFFSET = ½ · ((1 - 1/(2·15)) + (1 - 1/(2·16))) = 0.9677083, the mean of the outermost bin
  centres of a 15- and a 16-bin code, as in the QLoRA paper's reference implementation.
After dividing by the largest level the table is (what `nf4_levels()` computes, and what
tests/test_nf4.py checks against bitsandbytes' own table):

    -1.0000 -0.6962 -0.5251 -0.3949 -0.2844 -0.1848 -0.0911  0.0000
     0.0796  0.1609  0.2461  0.3379  0.4407  0.5626  0.7230  1.0000

Block-wise absmax. The weight is flattened and cut into blocks of 64 values (padded with zeros at
the end); each block stores its absmax (one fp32 number) and, per value, the index (0..15) of the
nearest level to value / absmax. One outlier then only coarsens its own 64 values.
Dequantising is a table lookup times the block's absmax.

Double quantisation (optional, on by default). An fp32 absmax per 64 values costs 32/64 = 0.5 bit
per weight. QLoRA quantises these scales too: subtract their mean, then store each as an 8-bit
code in blocks of 256 scales with one fp32 scale per block (0.127 bit per weight in all).
bitsandbytes uses its 8-bit "dynamic tree" float code for this step; lightft uses plain symmetric
int8 (round(x / absmax₂ · 127)), also 8 bits and a line of code, with a relative error on each scale
of at most 1/254 of its block's spread, small against the 4-bit rounding of the weights themselves.

Packing. Two 4-bit codes share a byte: the even-indexed value in the high nibble, the odd one in
the low nibble (bitsandbytes' order too). Storage per weight: 4 bits + 0.5 (or ~0.127 with
double quantisation) bit of scale: 4.5 / 4.127 bits, against 16 for bf16 (0.28x / 0.26x).

Just-in-time dequantisation. `NF4Linear` keeps only the packed codes and scales. Its forward pass
dequantises W into a temporary, multiplies, and drops it; the backward pass (the input gradient
dX = dY · W, the only one a frozen weight needs) dequantises again. A custom autograd Function
makes sure autograd never saves the dequantised W for backward, so between steps only the 4-bit
form exists. The price is two dequantisations per layer and step (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_SIZE = 64  # values per absmax block (QLoRA's choice)
SCALE_BLOCK_SIZE = 256  # absmax values per second-level block under double quantisation
OFFSET = 0.5 * ((1 - 1 / (2 * 15)) + (1 - 1 / (2 * 16)))  # 0.9677083: outermost probability, see above
CHUNK_BLOCKS = 1 << 14  # blocks dequantised per pass (1M values): bounded temporaries, cache friendly


@functools.lru_cache(maxsize=None)
def _levels64() -> torch.Tensor:
    probs_pos = torch.linspace(OFFSET, 0.5, 9, dtype=torch.float64)[:-1]  # 8 positive levels (0 added once below)
    probs_neg = torch.linspace(OFFSET, 0.5, 8, dtype=torch.float64)[:-1]  # 7 negative levels
    values = torch.cat([torch.special.ndtri(probs_pos), torch.zeros(1, dtype=torch.float64),
                        -torch.special.ndtri(probs_neg)])
    values, _ = torch.sort(values / values.max())
    return values


def nf4_levels(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 16 NF4 levels, ascending, from -1 to 1 with an exact 0 (see the module docstring)."""
    return _levels64().to(dtype)


@functools.lru_cache(maxsize=None)
def _byte_table() -> torch.Tensor:
    """(256, 2) fp32: the two levels a packed byte stands for (high nibble first)."""
    levels = nf4_levels()
    byte = torch.arange(256)
    return torch.stack([levels[byte >> 4], levels[byte & 15]], dim=1)


def _blocks(flat: torch.Tensor, size: int) -> torch.Tensor:
    """(n,) -> (n_blocks, size), zero-padded at the end."""
    pad = (-flat.numel()) % size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, size)


def quantize_blocks(w: torch.Tensor, block_size: int = BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Any-shape float tensor -> (packed codes uint8 (n_padded/2,), absmax fp32 (n_blocks,))."""
    assert block_size % 2 == 0, "two codes per byte need an even block size"
    blocks = _blocks(w.detach().reshape(-1).float(), block_size)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks / absmax.clamp(min=torch.finfo(torch.float32).tiny)[:, None]  # in [-1, 1]
    levels = nf4_levels()
    # nearest level: the bucket between consecutive midpoints (a value exactly on one goes down)
    codes = torch.bucketize(scaled, (levels[1:] + levels[:-1]) / 2).to(torch.uint8).view(-1)
    packed = (codes[0::2] << 4) | codes[1::2]  # even index -> high nibble
    return packed, absmax


def quantize_scales(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation: fp32 scales -> (int8 codes, fp32 scale per 256, fp32 mean offset)."""
    offset = absmax.mean()
    blocks = _blocks(absmax - offset, SCALE_BLOCK_SIZE)  # (n2, 256)
    scale = blocks.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)  # (n2,)
    codes = torch.round(blocks / scale[:, None] * 127).to(torch.int8).view(-1)[: absmax.numel()]
    return codes, scale, offset


def dequantize_scales(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_scales` (up to its rounding): fp32 (n_blocks,)."""
    blocks = _blocks(codes.float(), SCALE_BLOCK_SIZE)  # (n2, 256)
    return (blocks * (scale[:, None] / 127)).view(-1)[: codes.numel()] + offset


class NF4Weight(nn.Module):
    """A frozen weight stored as NF4: packed codes + block scales, as buffers (they move with `.to(device)`).

    Holds no parameters, so optimisers and `requires_grad` never see it. `dequantize()` rebuilds
    the weight; `linear(x, bias)` computes x Wᵀ + b without keeping W (see `nf4_linear`).
    """

    def __init__(self, weight: torch.Tensor, block_size: int = BLOCK_SIZE, double_quant: bool = True):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.numel = weight.numel()
        self.block_size = block_size
        self.dtype = weight.dtype  # what `dequantize()` returns by default (the dtype the weight came in)
        self.double_quant = double_quant
        codes, absmax = quantize_blocks(weight, block_size)
        self.register_buffer("codes", codes)
        # fp32 scales are kept as their raw bits (int32): a model-wide `.to(torch.bfloat16)`, which is
        # what Lightning's bf16-true precision does, converts floating buffers and would round them
        if double_quant:
            scale_codes, scale, offset = quantize_scales(absmax)
            self.register_buffer("absmax_codes", scale_codes)
            self.register_buffer("absmax_scale", scale.view(torch.int32))
            self.register_buffer("absmax_offset", offset.reshape(1).view(torch.int32))
        else:
            self.register_buffer("absmax", absmax.view(torch.int32))

    def scales(self) -> torch.Tensor:
        """The per-block absmax values, fp32 (n_blocks,)."""
        if self.double_quant:
            return dequantize_scales(self.absmax_codes, self.absmax_scale.view(torch.float32),
                                     self.absmax_offset.view(torch.float32))
        return self.absmax.view(torch.float32)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The weight in `dtype` (default: the dtype it was quantised from), shape as the original."""
        with torch.profiler.record_function("nf4.dequantize"):  # named in profiles (benchmarks/RESULTS.md)
            return self._dequantize(dtype or self.dtype)

    def _dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        table = _byte_table().to(self.codes.device)
        scales = self.scales()
        half = self.block_size // 2  # bytes per block
        packed = self.codes.view(-1, half)  # (n_blocks, bytes per block)
        out = torch.empty(packed.shape[0], self.block_size, dtype=dtype, device=self.codes.device)
        for s in range(0, packed.shape[0], CHUNK_BLOCKS):  # chunks: fp32 temporaries stay small
            # one row of the byte table per byte (index_select with int32 indices: ~5x faster than t[idx])
            pairs = table.index_select(0, packed[s : s + CHUNK_BLOCKS].reshape(-1).int())  # (chunk·half, 2)
            out[s : s + CHUNK_BLOCKS] = pairs.view(-1, self.block_size).mul_(scales[s : s + CHUNK_BLOCKS, None])
        return out.view(-1)[: self.numel].view(self.shape)

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return nf4_linear(x, self, bias)

    def nbytes(self) -> int:
        """Bytes held: packed codes + scales (+ the second-level scales)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        bits = 8 * self.nbytes() / self.numel
        return f"shape={self.shape}, block={self.block_size}, double_quant={self.double_quant}, {bits:.3f} bits/weight"


class _NF4LinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b with W dequantised in forward and again in backward; nothing dequantised is saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, qweight: NF4Weight, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.qweight = qweight  # the module (4-bit buffers), not a dequantised tensor
        ctx.bias_grad = bias is not None and bias.requires_grad
        return F.linear(x, qweight.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        grad_x = grad_y @ ctx.qweight.dequantize(grad_y.dtype) if ctx.needs_input_grad[0] else None  # (…, in)
        grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0) if ctx.bias_grad else None
        return grad_x, None, grad_b


def nf4_linear(x: torch.Tensor, qweight: NF4Weight, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x Wᵀ + b for an NF4 weight, W dequantised just in time (the plain reference path)."""
    if not torch.is_grad_enabled() or not (x.requires_grad or (bias is not None and bias.requires_grad)):
        return F.linear(x, qweight.dequantize(x.dtype), bias)  # inference: no backward to plan for
    return _NF4LinearFunction.apply(x, qweight, bias)


class NF4Linear(nn.Linear):
    """A frozen `nn.Linear` whose weight is stored as NF4 (`qweight`); `weight` is None.

    It is still an `nn.Linear` (same in/out features and `bias`, and LoRA can wrap it: see
    lightft/lora/layer.py), but the weight exists only as `qweight`; `dequantized_weight()`
    rebuilds it in full precision.
    """

    def __init__(self, qweight: NF4Weight, bias: Optional[nn.Parameter] = None):
        out_features, in_features = qweight.shape
        super().__init__(in_features, out_features, bias=False, device="meta")
        self.register_parameter("weight", None)
        self.qweight = qweight
        self.bias = bias
        if bias is not None:
            bias.requires_grad_(False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, block_size: int = BLOCK_SIZE, double_quant: bool = True) -> "NF4Linear":
        return cls(NF4Weight(linear.weight, block_size, double_quant), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qweight.linear(x, self.bias)

    def dequantized_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.qweight.dequantize(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, nf4"


def nf4_bits_per_weight(double_quant: bool = True, block_size: int = BLOCK_SIZE) -> float:
    """Storage cost per weight, ignoring padding: 4 bits + the scales' share."""
    scale_bits = (8 + 32 / SCALE_BLOCK_SIZE) / block_size if double_quant else 32 / block_size
    return 4 + scale_bits


def max_abs_error_bound(absmax: torch.Tensor) -> torch.Tensor:
    """Largest |w - dequant(w)| nearest-level rounding can cause in a block: half the widest gap × absmax."""
    levels = nf4_levels()
    return (levels[1:] - levels[:-1]).max() / 2 * absmax

