"""The blocked causal-attention backward (lightft/kernels/attention.py) against SDPA's autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightft.kernels import attention
from lightft.kernels.attention import attend, blocked_backward_applies


def causal_attention(q, k, v, allowed=None):
    """The kernel as a causal model calls it: `allowed` holds the causal rule and more (None: plain causal)."""
    return attend(q, k, v, allowed, 0.0, True)


def _grads(fn, q, k, v, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(grad_out)
    return out, [t.grad for t in leaves]


@pytest.mark.parametrize("heads,kv_heads,T,block_rows,block_elements", [
    (4, 4, 37, 16, 1 << 24),  # plain multi-head, T not a multiple of the block
    (6, 2, 50, 16, 1 << 24),  # grouped-query
    (6, 2, 50, 64, 1 << 24),  # one block
    (6, 2, 50, 16, 1000),  # batch rows split into groups
    (3, 1, 9, 4, 1 << 24),  # multi-query
])
def test_blocked_backward_matches_sdpa(monkeypatch, heads, kv_heads, T, block_rows, block_elements):
    monkeypatch.setattr(attention, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(attention, "BLOCK_ELEMENTS", block_elements)
    torch.manual_seed(0)
    B, hd = 3, 16
    # q/k/v as the model makes them: (B, T, heads, hd) views transposed to (B, heads, T, hd)
    q = torch.randn(B, T, heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(B, T, kv_heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    v = torch.randn(B, T, kv_heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    g = torch.randn(B, heads, T, hd, dtype=torch.bfloat16)
    assert blocked_backward_applies(q.requires_grad_(), k, v, 0.0)
    ours, ours_grads = _grads(causal_attention, q, k, v, g)

    def ref_fn(a, b, c):  # fp32 reference
        return F.scaled_dot_product_attention(a.float(), b.float(), c.float(), is_causal=True,
                                              enable_gqa=heads != kv_heads)

    ref, ref_grads = _grads(ref_fn, q, k, v, g.float())
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=2e-2)
    for name, a, b in zip("qkv", ours_grads, ref_grads):
        err = (a.float() - b).abs().max() / b.abs().max()
        assert err < 2e-2, f"d{name}: relative error {err:.4f}"


def test_other_cases_use_sdpa():
    q = torch.randn(1, 2, 5, 8, dtype=torch.bfloat16, requires_grad=True)
    assert not blocked_backward_applies(q.float(), q.float(), q.float(), 0.0)  # fp32: SDPA's own is faster
    assert not blocked_backward_applies(q, q, q, 0.1)  # attention dropout
    assert not blocked_backward_applies(q, q[:, :, :3], q[:, :, :3], 0.0)  # query/key lengths differ
    with torch.no_grad():
        assert not blocked_backward_applies(q, q, q, 0.0)  # inference


@pytest.mark.parametrize("batch_mask", [True, False])
def test_blocked_backward_with_packed_documents_matches_sdpa(monkeypatch, batch_mask):
    """Packed rows: attention stays causal and inside each document (segment mask passed as `allowed`)."""
    monkeypatch.setattr(attention, "BLOCK_ROWS", 16)
    torch.manual_seed(0)
    B, heads, kv_heads, T, hd = 3, 6, 2, 40, 16
    q = torch.randn(B, T, heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    k = torch.randn(B, T, kv_heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    v = torch.randn(B, T, kv_heads, hd, dtype=torch.bfloat16).transpose(1, 2)
    g = torch.randn(B, heads, T, hd, dtype=torch.bfloat16)
    segments = torch.tensor([[0] * 13 + [1] * 20 + [2] * 7, [0] * 40, [0] * 5 + [1] * 35])[: B if batch_mask else 1]
    allowed = (segments[:, None, :, None] == segments[:, None, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    ours, ours_grads = _grads(lambda a, b, c: causal_attention(a, b, c, allowed=allowed), q, k, v, g)

    def ref_fn(a, b, c):
        return F.scaled_dot_product_attention(a.float(), b.float(), c.float(), attn_mask=allowed, enable_gqa=True)

    ref, ref_grads = _grads(ref_fn, q, k, v, g.float())
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=2e-2)
    for name, a, b in zip("qkv", ours_grads, ref_grads):
        err = (a.float() - b).abs().max() / b.abs().max()
        assert err < 2e-2, f"d{name}: relative error {err:.4f}"
