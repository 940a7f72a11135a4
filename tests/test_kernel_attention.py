"""The attention kernels (lightft/kernels/attention.py) against SDPA's autograd: the blocked causal backward and
the explicit-score path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightft.kernels import attention
from lightft.kernels.attention import attend, blocked_backward_applies, explicit_applies, explicit_attention
from lightft.kernels.dropout import fast_dropout


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


def _padding_mask(B: int, S: int) -> torch.Tensor:
    lengths = torch.tensor([S, S - 3, 1])[:B]
    return (torch.arange(S)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S), True = a real key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
def test_explicit_attention_matches_sdpa(dtype, causal):
    """No dropout: outputs and gradients of the explicit scores equal fp32 SDPA's (padding mask or causal)."""
    torch.manual_seed(0)
    B, H, T, hd = 3, 4, 21, 16
    q, k, v = (torch.randn(B, T, H, hd, dtype=dtype).transpose(1, 2) for _ in range(3))
    g = torch.randn(B, H, T, hd, dtype=dtype)
    mask = None if causal else _padding_mask(B, T)
    ours, ours_grads = _grads(lambda a, b, c: explicit_attention(a, b, c, mask, 0.0, causal), q, k, v, g)

    def ref_fn(a, b, c):
        return F.scaled_dot_product_attention(a.float(), b.float(), c.float(), attn_mask=mask, is_causal=causal)

    ref, ref_grads = _grads(ref_fn, q, k, v, g.float())
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(ours.float(), ref, rtol=tol, atol=tol)
    for name, a, b in zip("qkv", ours_grads, ref_grads):
        err = (a.float() - b).abs().max() / b.abs().max()
        assert err < tol, f"d{name}: relative error {err:.4f}"


def test_explicit_attention_dropout_is_the_fast_mask_on_the_probabilities():
    """With dropout, the output is P V with P dropped by kernels/dropout.py's mask (same seed, same mask)."""
    B, H, T, hd = 2, 3, 9, 8
    q, k, v = (torch.randn(B, H, T, hd) for _ in range(3))
    mask = _padding_mask(B, T)
    torch.manual_seed(5)
    ours = explicit_attention(q, k, v, mask, 0.25, False)
    probs = (q @ k.transpose(-2, -1) / hd ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    torch.manual_seed(5)
    expected = fast_dropout(probs, 0.25, True) @ v
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, probs @ v)  # something was dropped


def test_attend_takes_explicit_scores_where_sdpa_is_slow(monkeypatch):
    bf16 = torch.randn(2, 4, 6, 8, dtype=torch.bfloat16, requires_grad=True)
    fp32 = bf16.detach().float().requires_grad_()
    assert explicit_applies(bf16, bf16, bf16, 0.0)  # bf16 with a padding mask: SDPA's flash backward is slow
    assert explicit_applies(fp32, fp32, fp32, 0.1)  # attention dropout: SDPA's math path is slow
    assert not explicit_applies(fp32, fp32, fp32, 0.0)  # fp32 without dropout: SDPA's flash path is faster
    assert not explicit_applies(bf16, bf16[:, :2], bf16[:, :2], 0.1)  # grouped-query heads
    with torch.no_grad():
        assert not explicit_applies(bf16, bf16, bf16, 0.1)  # inference
    monkeypatch.setattr(attention, "EXPLICIT_MAX_SCORES", 2 * 4 * 6 * 6 - 1)
    assert not explicit_applies(bf16, bf16, bf16, 0.0)  # scores too large to store: SDPA's flash path stores none
    assert explicit_applies(bf16, bf16, bf16, 0.1)  # with dropout SDPA's math path stores them as well
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(attention, "explicit_attention", lambda *a: calls.append(a) or a[0])
    attend(fp32, fp32, fp32, None, 0.1, False)
    attend(bf16, bf16, bf16, None, 0.0, True)  # causal bf16 without dropout: the blocked kernel instead
    assert len(calls) == 1


def test_attention_layer_benchmark_runs_every_case():
    """benchmarks/attention_layer.py (the docstring's one-layer timings) runs at toy sizes and prints each row."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "benchmarks/attention_layer.py", "--batch", "2", "--lengths", "8,12",
                          "--decoder-length", "16", "--reps", "1"], cwd=repo, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| encoder") or line.startswith("| decoder")]
    assert len(rows) == 2 * 3 + 1 and all(line.endswith("| yes |") for line in rows)


def _autograd_explicit(q, k, v, mask, dropout):
    """The explicit path as plain autograd ops (what kernels/attention.py computed before its own backward)."""
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.float().softmax(-1).to(q.dtype)
    return torch.matmul(fast_dropout(probs, dropout, True) if dropout else probs, v)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_explicit_attention_backward_equals_autograd_of_the_same_ops(dtype, dropout):
    """The hand-written backward (P rebuilt from what is kept) gives autograd's gradients; the forward is the same
    ops with the same dropout mask, so outputs are identical."""
    B, H, T, hd = 3, 4, 19, 16
    torch.manual_seed(1)
    q, k, v = (torch.randn(B, H, T, hd, dtype=dtype) for _ in range(3))
    g = torch.randn(B, H, T, hd, dtype=dtype)
    mask = _padding_mask(B, T)
    torch.manual_seed(7)
    ours, ours_grads = _grads(lambda a, b, c: explicit_attention(a, b, c, mask, dropout, False), q, k, v, g)
    torch.manual_seed(7)
    ref, ref_grads = _grads(lambda a, b, c: _autograd_explicit(a, b, c, mask, dropout), q, k, v, g)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    # bf16: the backward reads P in bf16 where autograd kept it in fp32 too; dropout's 1/(1-p) rounds in bf16
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for name, a, b in zip("qkv", ours_grads, ref_grads):
        err = (a.float() - b.float()).abs().max() / b.float().abs().max()
        assert err < tol, f"d{name}: relative error {err:.4f}"


def test_explicit_attention_keeps_only_the_probabilities_and_the_dropout_mask():
    """Saved for backward at (B, H, T, S): P in the inputs' dtype and the bool keep mask, nothing else that size
    (autograd of the same ops keeps fp32 P as well: 7 bytes per score instead of 3)."""
    B, H, T, hd = 2, 3, 24, 8
    q, k, v = (torch.randn(B, H, T, hd, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = _padding_mask(B, T)

    def saved_big_bytes(fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t) or t, lambda t: t):
            fn(q, k, v, mask, 0.1)
        big = {t.data_ptr(): t for t in sizes if t.numel() >= B * H * T * T}  # one count per tensor
        return sorted((str(t.dtype), t.numel() * t.element_size()) for t in big.values())

    n = B * H * T * T
    assert saved_big_bytes(lambda *a: explicit_attention(*a, False)) == [("torch.bfloat16", 2 * n), ("torch.bool", n)]
    assert sum(b for _, b in saved_big_bytes(_autograd_explicit)) >= 2 * 3 * n  # 7n: fp32 P, bf16 P, the mask
