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

Dequantising, packing and the linear layer that dequantises just in time are shared with the other
4-bit scheme (Q4_1) and live in lightft/quant/blockwise.py; this file holds what is NF4's own: the
levels, the absmax scaling and the double quantisation of the scales.
"""

from __future__ import annotations

import functools

import torch

from lightft.quant.blockwise import BlockQuantWeight, blocks_of, float_bits, pack_nibbles

BLOCK_SIZE = 64  # values per absmax block (QLoRA's choice)
SCALE_BLOCK_SIZE = 256  # absmax values per second-level block under double quantisation
OFFSET = 0.5 * ((1 - 1 / (2 * 15)) + (1 - 1 / (2 * 16)))  # 0.9677083: outermost probability, see above


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


@functools.lru_cache(maxsize=1)
def _level_values() -> tuple[float, ...]:
    """`nf4_levels()` as fp32 values, computed once (every dequantisation asks for them)."""
    return tuple(nf4_levels().tolist())


def quantize_blocks(w: torch.Tensor, block_size: int = BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Any-shape float tensor -> (packed codes uint8 (n_padded/2,), absmax fp32 (n_blocks,))."""
    assert block_size % 2 == 0, "two codes per byte need an even block size"
    blocks = blocks_of(w.detach().reshape(-1).float(), block_size)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks / absmax.clamp(min=torch.finfo(torch.float32).tiny)[:, None]  # in [-1, 1]
    levels = nf4_levels()
    # nearest level: the bucket between consecutive midpoints (a value exactly on one goes down)
    codes = torch.bucketize(scaled, (levels[1:] + levels[:-1]) / 2)
    return pack_nibbles(codes), absmax


def quantize_scales(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation: fp32 scales -> (int8 codes, fp32 scale per 256, fp32 mean offset)."""
    offset = absmax.mean()
    blocks = blocks_of(absmax - offset, SCALE_BLOCK_SIZE)  # (n2, 256)
    scale = blocks.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)  # (n2,)
    codes = torch.round(blocks / scale[:, None] * 127).to(torch.int8).view(-1)[: absmax.numel()]
    return codes, scale, offset


def dequantize_scales(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_scales` (up to its rounding): fp32 (n_blocks,)."""
    blocks = blocks_of(codes.float(), SCALE_BLOCK_SIZE)  # (n2, 256)
    return (blocks * (scale[:, None] / 127)).view(-1)[: codes.numel()] + offset


class NF4Weight(BlockQuantWeight):
    """A frozen weight stored as NF4: packed codes + block absmax values (double-quantised by default)."""

    scheme = "nf4"

    def __init__(self, weight: torch.Tensor, block_size: int = BLOCK_SIZE, double_quant: bool = True):
        super().__init__(weight, block_size)
        self.double_quant = double_quant
        codes, absmax = quantize_blocks(weight, block_size)
        self.register_buffer("codes", codes)
        if double_quant:
            scale_codes, scale, offset = quantize_scales(absmax)
            self.register_buffer("absmax_codes", scale_codes)
            self.register_buffer("absmax_scale", float_bits(scale))
            self.register_buffer("absmax_offset", float_bits(offset.reshape(1)))
        else:
            self.register_buffer("absmax", float_bits(absmax))

    def levels(self) -> tuple[float, ...]:
        return _level_values()

    def scales(self) -> torch.Tensor:
        """The per-block absmax values, fp32 (n_blocks,)."""
        if self.double_quant:
            return dequantize_scales(self.absmax_codes, self.absmax_scale.view(torch.float32),
                                     self.absmax_offset.view(torch.float32))
        return self.absmax.view(torch.float32)

    def describe(self) -> str:
        return f"block={self.block_size}, double_quant={self.double_quant}"


def nf4_bits_per_weight(double_quant: bool = True, block_size: int = BLOCK_SIZE) -> float:
    """Storage cost per weight, ignoring padding: 4 bits + the scales' share."""
    scale_bits = (8 + 32 / SCALE_BLOCK_SIZE) / block_size if double_quant else 32 / block_size
    return 4 + scale_bits


def max_abs_error_bound(absmax: torch.Tensor) -> torch.Tensor:
    """Largest |w - dequant(w)| nearest-level rounding can cause in a block: half the widest gap × absmax."""
    levels = nf4_levels()
    return (levels[1:] - levels[:-1]).max() / 2 * absmax

