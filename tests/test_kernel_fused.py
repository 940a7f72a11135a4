"""The hand-written RMSNorm / RoPE backward passes (lightft/kernels/fused.py) against autograd on the references."""

import pytest
import torch

from lightft.kernels.fused import rms_norm, rotary
from lightft.model import rms_norm as rms_norm_reference
from lightft.rope import apply_rotary as rotary_reference

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _grads(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out, [t.grad for t in leaves if t.requires_grad]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("train_weight", [False, True])
@pytest.mark.parametrize("chunk_elements", [1 << 17, 48])  # one chunk; chunks of 3 rows (15 rows in all)
def test_rms_norm_matches_autograd(monkeypatch, dtype, train_weight, chunk_elements):
    from lightft.kernels import fused

    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=dtype) * 3
    w = (1 + 0.1 * torch.randn(16, dtype=dtype)).requires_grad_(train_weight)
    g = torch.randn(3, 5, 16, dtype=dtype)
    ours, ours_grads = _grads(lambda a, b: rms_norm(a, b, 1e-6), [x.requires_grad_(), w], g)
    ref, ref_grads = _grads(lambda a, b: rms_norm_reference(a, b, 1e-6), [x, w], g)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    assert len(ours_grads) == len(ref_grads) == 1 + train_weight
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_rms_norm_leaves_fp32_input_untouched():
    x = torch.randn(2, 8)
    before = x.clone()
    rms_norm(x, torch.ones(8), 1e-6)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_matches_autograd_on_strided_input(dtype):
    """q arrives as a (B, T, heads, hd) -> (B, heads, T, hd) transposed view; the output keeps its strides."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 8, dtype=dtype).transpose(1, 2)  # (B, heads, T, hd), not contiguous
    angles = torch.rand(2, 1, 7, 4) * 6
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    g = torch.randn(2, 3, 7, 8, dtype=dtype)
    ours, (gx,) = _grads(lambda a: rotary(a, cos, sin), [x.requires_grad_()], g)
    ref, (gref,) = _grads(lambda a: rotary_reference(a, cos, sin), [x], g)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    torch.testing.assert_close(gx, gref, **TOL[dtype])
    assert ours.stride() == x.stride()


def test_rotary_backward_is_the_inverse_rotation():
    """Rotation is orthogonal: rotating the gradient back by -angle recovers a rotated input exactly (fp32)."""
    x = torch.randn(1, 2, 5, 6, requires_grad=True)
    angles = torch.rand(1, 1, 5, 3)
    y = rotary(x, angles.cos(), angles.sin())
    (gx,) = torch.autograd.grad(y, x, y.detach())
    torch.testing.assert_close(gx, x.detach(), rtol=1e-5, atol=1e-5)
