"""Hand-written forward/backward pairs for the two elementwise hot spots of Llama blocks: RMSNorm and RoPE.

Why: on a CPU the matmuls of a small model are fast (AMX bf16) and the memory passes around them
are not. Autograd records every small op of these two layers and replays a backward pass for each
(RMSNorm: 8 kernels and 4 saved tensors; RoPE's rotate-half: neg, cat, slices, two products), which
profiled as more time than the q/k/v projections (benchmarks/RESULTS.md, issue 7). Written by hand,
the backward of each is a few passes that reuse what forward saved:

- RMSNorm: y = w · n with n = x / rms(x) computed in fp32. Saving x and the per-row 1/rms (one float
  per row) is enough: dn = dy · w, dx = (dn − n · mean(dn · n)) / rms, dw = Σ dy · n.
- RoPE: the rotation of each (x1, x2) half-pair by angle θ is orthogonal, so its backward is the
  rotation by −θ: the same kernel with sin negated, nothing saved but the (shared) cos/sin tables.

Both give the same values as the plain formulas (tests/test_fused.py compares outputs and gradients
with autograd's in fp32 and bf16). Under `torch.compile` the plain formulas are used instead: the
compiler fuses them itself and traces plain ops more simply than custom Functions.
"""

from __future__ import annotations

import torch


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------- RMSNorm
def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) · weight with the statistics in fp32 and the result cast back, as Llama does."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True).add_(eps))  # (…, 1) fp32
        ctx.save_for_backward(x, weight, inv_rms)
        return weight * (x32 * inv_rms).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        n = x.float() * inv_rms  # (…, H) fp32, recomputed: cheaper than saving it
        grad_w = None
        if ctx.needs_input_grad[1]:
            rows = tuple(range(grad_y.dim() - 1))
            grad_w = (grad_y.float() * n.to(x.dtype)).sum(dim=rows).to(weight.dtype)
        grad_n = (grad_y * weight).float()
        dot = (grad_n * n).mean(-1, keepdim=True)  # (…, 1)
        grad_x = grad_n.sub_(n.mul_(dot)).mul_(inv_rms).to(x.dtype)
        return grad_x, grad_w, None


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


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The textbook form: x · cos + rotate_half(x) · sin, with the half tables repeated."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # (x1, x2) -> (-x2, x1)
    return x * torch.cat((cos, cos), -1) + rotated * torch.cat((sin, sin), -1)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim) by cos/sin half tables (B, 1, T, head_dim/2)."""
    if _compiling():
        return rotary_reference(x, cos, sin)
    if not _needs_grad(x):
        return _rotate_into(x, cos, sin, torch.empty_like(x))  # skips autograd.Function's per-call cost
    return _Rotary.apply(x, cos, sin)
