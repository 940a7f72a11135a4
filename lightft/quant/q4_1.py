"""Q4_1 weights (llama.cpp's block-affine 4-bit format) as a QLoRA base: `--quantize q4_1`.

Why a second scheme next to NF4. Many models reach people as GGUF files that are already 4-bit;
lightft's packaged SmolLM2-135M-Instruct is one (SmolLM2-135M-Instruct.Q4_1.gguf). `convert gguf`
turns such a file into full-precision weights, but those weights still hold only 16 distinct values
per block of 32 — the GGUF's own codes. Quantising them again with NF4 puts a second, differently
shaped 16-level grid on top of the first, and the base gets measurably worse (benchmarks/RESULTS.md:
+10.5 % validation loss on SmolLM2 + Alpaca before any training, +6.9 % even with NF4 blocks of 16).
Q4_1 quantisation of the same weights finds exactly the GGUF's codes again (see "Round trip"), so a
QLoRA run on that base loses nothing to quantisation at all; on full-precision weights it is an
ordinary 4-bit scheme, somewhat less accurate than NF4 for normally distributed weights.

The format. The weight is flattened and cut into blocks of 32 values (the last one padded with
copies of the last value, which keeps its range). A block stores its minimum
m and step d = (max - min) / 15, both as fp16, and each value as the code q = round((w - m) / d) in
0..15; dequantising is w ≈ d · q + m. Codes are packed two per byte in lightft's nibble order (the
even-indexed value in the high nibble; llama.cpp's byte layout differs, the numbers do not).
Storage: 4 bits + 2 · 16 bits per 32 values = 5 bits per weight (0.31x of bf16), against NF4's 4.127.

Round trip. If w was itself dequantised from Q4_1 (w = d · q + m with some q = 0 and some q = 15 in
each block, which the quantiser guarantees: the minimum maps to 0 and the maximum to 15), then the
block's minimum is m and (max - min) / 15 is d again, so quantising w gives back the same d, m and
codes, and dequantising gives back w bit for bit (tests/test_q4_1.py checks it against the `gguf`
package's own Q4_1 quantiser and on the packaged SmolLM2 file). The loader quantises from the
checkpoint's own fp32 values even when the run is bf16 (lightft/quant/__init__.py, `quantize_on_load`),
so a bf16 QLoRA run dequantises to exactly the bf16 base a plain LoRA run has.

The levels are 0..15 and the block statistics a scale and an offset, so the dequantisation, packing
and just-in-time linear layer are the shared ones in lightft/quant/blockwise.py.
"""

from __future__ import annotations

import torch

from lightft.quant.blockwise import BlockQuantWeight, blocks_of, float_bits, pack_nibbles

BLOCK_SIZE = 32  # values per block (llama.cpp's QK4_1)
LEVELS = tuple(float(i) for i in range(16))  # code q stands for d * q + m


def quantize_blocks(w: torch.Tensor, block_size: int = BLOCK_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Any-shape float tensor -> (packed codes uint8 (n_padded/2,), step d fp16 (n_blocks,), min m fp16 (n_blocks,)).

    The codes are chosen against the fp16-rounded d and m that dequantisation will use."""
    blocks = blocks_of(w.detach().reshape(-1).float(), block_size, repeat_last=True)  # (n_blocks, block)
    low, high = blocks.amin(dim=1), blocks.amax(dim=1)  # (n_blocks,) each
    step = ((high - low) / 15).half()
    low16 = low.half()
    if not (torch.isfinite(step).all() and torch.isfinite(low16).all()):
        raise ValueError("q4_1: a weight block spans more than fp16's range (65504); use --quantize nf4")
    safe_step = step.float().clamp(min=torch.finfo(torch.float32).tiny)[:, None]  # a constant block: all codes 0
    codes = torch.round((blocks - low16.float()[:, None]) / safe_step).clamp_(0, 15)
    return pack_nibbles(codes), step, low16


class Q4_1Weight(BlockQuantWeight):
    """A frozen weight stored as Q4_1: packed codes + an fp16 step and minimum per block of 32."""

    scheme = "q4_1"

    def __init__(self, weight: torch.Tensor, block_size: int = BLOCK_SIZE):
        super().__init__(weight, block_size)
        codes, step, low = quantize_blocks(weight, block_size)
        self.register_buffer("codes", codes)
        self.register_buffer("step", float_bits(step))  # fp16 bits: survive a model-wide .to(bfloat16)
        self.register_buffer("low", float_bits(low))

    def levels(self) -> tuple[float, ...]:
        return LEVELS

    def scales(self) -> torch.Tensor:
        return self.step.view(torch.float16).float()

    def offsets(self) -> torch.Tensor:
        return self.low.view(torch.float16).float()


def q4_1_bits_per_weight(block_size: int = BLOCK_SIZE) -> float:
    """Storage cost per weight, ignoring padding: 4 bits + an fp16 step and minimum per block."""
    return 4 + 32 / block_size
