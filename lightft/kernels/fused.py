"""Hand-written forward/backward pairs for the two elementwise hot spots of Llama blocks: RMSNorm and RoPE.

Why: on a CPU the matmuls of a small model are fast (AMX bf16) and the memory passes around them
are not. Autograd records every small op of these two layers and replays a backward pass for each
(RMSNorm: 8 kernels and 4 saved tensors; RoPE's rotate-half: neg, cat, slices, two products), which
profiled as more time than the q/k/v projections (benchmarks/RESULTS.md, issue 7). Written by hand,
the backward of each is a few passes that reuse what forward saved:

- RMSNorm: y = w · n with n = x / rms(x) computed in fp32. Saving x and the per-row 1/rms (one float
  per row) is enough: dn = dy · w, dx = (dn − n · mean(dn · n)) / rms, dw = Σ dy · n. Both passes
  walk the rows in cache-sized chunks, so their fp32 temporaries never travel to memory.
- RoPE: the rotation of each (x1, x2) half-pair by angle θ is orthogonal, so its backward is the
  rotation by −θ: the same kernel with sin negated, nothing saved but the (shared) cos/sin tables.

Both give the same values as the reference formulas, `lightft.model.rms_norm` and
`lightft.rope.apply_rotary` (tests/test_kernel_fused.py compares outputs and gradients with
autograd's on them in fp32 and bf16). Under `torch.compile` the references are used instead: the
compiler fuses them itself and traces plain ops more simply than custom Functions.
"""

from __future__ import annotations

import torch

from lightft.model import rms_norm as rms_norm_reference
from lightft.rope import apply_rotary as rotary_reference


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------- RMSNorm
CHUNK_ELEMENTS = 1 << 17  # rows per RMSNorm pass: 128k fp32 values (512 KB) per temporary stay in L2 cache


def _chunk_rows(rows: torch.Tensor) -> int:
    """Rows per pass: cache-sized on a CPU; all at once elsewhere (a GPU wants few, large kernels)."""
    if rows.device.type != "cpu":
        return max(1, rows.shape[0])
    return max(1, CHUNK_ELEMENTS // rows.shape[1])


class _RMSNorm(torch.autograd.Function):
    """Rows are processed in cache-sized chunks: the 4-6 passes over each chunk then hit the cache
    instead of memory, about 2x faster forward + backward than whole-tensor passes on a 2-core CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (N, H)
        out = torch.empty_like(rows)
        inv_rms = torch.empty(rows.shape[0], 1, dtype=torch.float32, device=x.device)  # one float per row
        step = _chunk_rows(rows)
        for s in range(0, rows.shape[0], step):
            chunk = rows[s : s + step]
            inv = torch.rsqrt(chunk.float().pow(2).mean(-1, keepdim=True).add_(eps))
            inv_rms[s : s + step] = inv
            torch.mul((chunk * inv).to(x.dtype), weight, out=out[s : s + step])
        ctx.save_for_backward(x, weight, inv_rms)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        rows, grads = x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, x.shape[-1])  # (N, H)
        grad_x = torch.empty_like(rows)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if ctx.needs_input_grad[1] else None
        step = _chunk_rows(rows)
        for s in range(0, rows.shape[0], step):
            inv, g = inv_rms[s : s + step], grads[s : s + step]
            n = rows[s : s + step] * inv  # (rows, H) fp32, recomputed: cheaper than saving it
            if grad_w is not None:
                grad_w += (g.float() * n.to(x.dtype)).sum(0)
            grad_n = (g * weight).float()
            dot = (grad_n * n).mean(-1, keepdim=True)  # (rows, 1)
            grad_x[s : s + step] = grad_n.sub_(n.mul_(dot)).mul_(inv)
        return grad_x.view(x.shape), grad_w.to(weight.dtype) if grad_w is not None else None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with a hand-written backward (see the module docstring)."""
    if _compiling() or not _needs_grad(x, weight):
        return rms_norm_reference(x, weight, eps)  # no backward to save for (inference, decoding)
    return _RMSNorm.apply(x, weight, eps)


# ------------------------------------------------------------------------------------------ RoPE
def _rotate_into(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = (x1·cos − x2·sin, x2·cos + x1·sin) for the halves x1, x2 of the last dimension."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out1, out2 = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin)
    return out


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate_into(x, cos, sin, torch.empty_like(x))  # same strides as x

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate_into(grad_out, cos, -sin, torch.empty_like(grad_out)), None, None


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim) by cos/sin half tables (B, 1, T, head_dim/2)."""
    if _compiling():
        return rotary_reference(x, cos, sin)
    if not _needs_grad(x):
        return _rotate_into(x, cos, sin, torch.empty_like(x))  # skips autograd.Function's per-call cost
    return _Rotary.apply(x, cos, sin)
