"""Self-attention kernels for CPU training: a blocked-matmul causal backward, explicit-score attention where
SDPA's CPU paths are slow, and no mask for right padding.

Equals: `lightft.model.sdpa_attention` and `lightft.model.build_mask` at every real position
(tests/test_kernel_attention.py compares outputs and gradients with SDPA's autograd; tests/
test_kernels_switch.py a whole training step per family).

**Blocked causal backward.** PyTorch's CPU flash-attention backward does not use the bf16 matrix units
well — for SmolLM2's shape (8 × 512 tokens, 9 query / 3 key-value heads of 64) it takes about 6x its
forward and was the largest single item of a LoRA training step (31 %, benchmarks/RESULTS.md, issue 7).
The backward written here with batched matmuls runs about 1.6x faster at the same accuracy.

The math (per head; S = scale · Q Kᵀ, P = softmax(S) under the causal mask, O = P V):

    dV = Pᵀ dO        dP = dO Vᵀ        dS = P ∘ (dP − D),  D_i = Σ_j dO_ij O_ij
    dQ = scale · dS K                   dK = scale · dSᵀ Q

P is never stored: forward keeps the per-row log-sum-exp L that the flash kernel returns, and
backward rebuilds P = exp(scale · Q Kᵀ − L) one block of query rows at a time, each block seeing
only the keys at or before its last row (the causal mask skips the rest), so the temporaries stay a
few MB. Grouped-query attention needs no copies: the G query heads that share a key-value head are
stacked as G · rows of one matrix product with that head's K and V.

Packed rows (several documents per row, attending only within their own document) pass their mask:
forward hands it to the flash kernel as a 0 / −inf bias and backward multiplies each block of P by it.

Used only where it wins: bf16, CPU, causal, no attention dropout, query length = key length
(training).

**Explicit scores** (`explicit_attention`): P = softmax(scale · Q Kᵀ + mask), dropout on P with the cheap mask
of kernels/dropout.py, then P V — what BERT's own attention code does, with a backward written out
(`_ExplicitAttention`) so that only P in the inputs' dtype and the bool dropout mask are kept.
SDPA on CPU has two slow training paths: with attention dropout it takes its "math" path (one Bernoulli
draw per score, fp32 copies), and in bf16 with a padding mask its flash backward. Measured fwd + bwd of one
MiniLM-shaped layer (batch 32, 12 heads of 32, padding mask, 2 threads, AMX Xeon; benchmarks/attention_layer.py
re-runs these; session 9's run): bf16, dropout 0.1, 40 tokens:
SDPA 16.6 ms, explicit 10.6 ms; 64 tokens: 23.0 vs 11.5 ms; 128: 106 vs 59 ms; bf16 without dropout, 40
tokens: SDPA 54 ms, explicit 6.6 ms. In fp32 without dropout SDPA's flash path is the faster one (64
tokens: 6.0 vs 9.3 ms, session 8), so it keeps that case. The probabilities are stored for backward
(B·H·T·S elements, 3 bytes each with the mask: 7 as plain autograd ops, which also keep fp32 P). With
dropout SDPA's math path stores them as well (and more), so the explicit path is taken at any
size; without dropout only up to EXPLICIT_MAX_SCORES elements, where SDPA's flash path, which stores none,
takes over. Numerics as BERT's eager attention under
autocast: bf16 scores, softmax in fp32, bf16 probabilities; the softmax backward reads the bf16 P (autograd
would read its fp32 copy: gradients agree to bf16 rounding, tests/test_kernel_attention.py).

Used where it wins: CPU training with attention dropout, or bf16 CPU training that the blocked kernel does
not take (non-causal), key-value heads = query heads. Everything else goes to the reference `sdpa_attention`.

Right-padded causal batches (`right_padded_mask`): real tokens never see the pads that follow them
under a causal mask, so plain causal attention, with no mask at all, gives the same outputs at every
real position (pad positions are ignored by every loss and metric), and is much faster than an
explicit mask; it also lets the blocked backward skip multiplying by the mask.
"""

from __future__ import annotations

from typing import Optional

import torch

from lightft.config import ModelConfig
from lightft.kernels.dropout import keep_mask
from lightft.model import build_mask, sdpa_attention

BLOCK_ROWS = 128  # query rows per backward block
BLOCK_ELEMENTS = 1 << 24  # cap on one block's (rows x keys) score elements, batch rows grouped to fit
EXPLICIT_MAX_SCORES = 1 << 24  # B·H·T·S cap for explicit_attention (its stored scores: 64 MiB in fp32)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: Optional[torch.Tensor]) -> torch.Tensor:
        # q (B, H, T, hd); k, v (B, KV, T, hd) -> out (B, H, T, hd), lse (B, H, T) fp32
        if allowed is None:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        else:  # packed rows: causal and within a document, as a 0 / -inf bias
            bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)
        ctx.save_for_backward(q, k, v, out, lse, allowed)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, out, lse, allowed = ctx.saved_tensors
        return (*causal_attention_backward(grad_out, q, k, v, out, lse, allowed), None)


def causal_attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              out: torch.Tensor, lse: torch.Tensor, allowed: Optional[torch.Tensor] = None
                              ) -> tuple[torch.Tensor, ...]:
    """(dQ, dK, dV) of causal softmax attention from the forward's output and log-sum-exp (see module doc).

    `allowed` (B or 1, 1, T, T), True = may attend, is a mask that is causal and more (packed documents);
    None means the plain causal mask.
    """
    B, H, T, hd = q.shape
    KV = k.shape[1]
    G = H // KV  # query heads per key-value head
    scale = hd**-0.5
    dtype = q.dtype
    # (B, H, …) -> (B, KV, G, …): query heads grouped under the key-value head they share
    q_g, do_g = q.unflatten(1, (KV, G)), grad_out.unflatten(1, (KV, G))
    k, v = k.contiguous(), v.contiguous()  # so each block's key prefix below is a view, not a copy
    causal = torch.ones(BLOCK_ROWS, BLOCK_ROWS, dtype=dtype, device=q.device).tril()  # 1 = key at or before query
    keep = allowed.to(dtype) if allowed is not None else None  # (B | 1, 1, T, T): 1 = may attend
    neg_lse = (-lse).to(dtype).unflatten(1, (KV, G))  # (B, KV, G, T)
    delta = (grad_out * out).sum(-1, dtype=torch.float32).to(dtype).unflatten(1, (KV, G))  # D, (B, KV, G, T)
    dq = torch.empty(B, KV, G, T, hd, dtype=dtype, device=q.device)
    dk = torch.zeros(B, KV, T, hd, dtype=torch.float32, device=q.device)  # summed over blocks: fp32
    dv = torch.zeros(B, KV, T, hd, dtype=torch.float32, device=q.device)
    batch_step = max(1, BLOCK_ELEMENTS // (H * BLOCK_ROWS * T))
    for b0 in range(0, B, batch_step):
        b1 = min(B, b0 + batch_step)
        m = (b1 - b0) * KV  # matrices per batched matmul
        for r0 in range(0, T, BLOCK_ROWS):
            r1 = min(T, r0 + BLOCK_ROWS)
            n = r1 - r0
            # this block's G·n query rows of each key-value head; the keys it may see: 0 .. r1-1
            q_b = q_g[b0:b1, :, :, r0:r1].reshape(m, G * n, hd)
            do_b = do_g[b0:b1, :, :, r0:r1].reshape(m, G * n, hd)
            k_b = k[b0:b1, :, :r1].reshape(m, r1, hd)
            v_b = v[b0:b1, :, :r1].reshape(m, r1, hd)
            # P = exp(scale · Q Kᵀ − L), (m, G·n, r1); keys after a row's own position are zeroed
            p = torch.baddbmm(neg_lse[b0:b1, :, :, r0:r1].reshape(m, G * n, 1), q_b, k_b.transpose(1, 2),
                              alpha=scale).exp_()
            if keep is None:
                p.view(m, G, n, r1)[..., r0:r1].mul_(causal[:n, :n])
            else:  # (b, n, r1) block of the mask, the same for every head
                rows = keep[b0:b1, 0, r0:r1, :r1] if keep.shape[0] > 1 else keep[:, 0, r0:r1, :r1]
                p.view(-1, KV, G, n, r1).mul_(rows[:, None, None])
            dv[b0:b1, :, :r1] += torch.bmm(p.transpose(1, 2), do_b).view(b1 - b0, KV, r1, hd)
            ds = torch.bmm(do_b, v_b.transpose(1, 2)).sub_(delta[b0:b1, :, :, r0:r1].reshape(m, G * n, 1)).mul_(p)
            dq[b0:b1, :, :, r0:r1] = torch.bmm(ds, k_b).mul_(scale).view(b1 - b0, KV, G, n, hd)
            dk[b0:b1, :, :r1] += torch.bmm(ds.transpose(1, 2), q_b).view(b1 - b0, KV, r1, hd)
    return dq.view(B, H, T, hd), dk.mul_(scale).to(dtype), dv.to(dtype)


def blocked_backward_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> bool:
    """True where `attend` takes the hand-written backward (see the module docstring)."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout == 0.0 and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad) and q.shape[2] == k.shape[2]
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))


@torch.compiler.disable
def _blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       allowed: Optional[torch.Tensor]) -> torch.Tensor:
    # Kept out of torch.compile graphs (a graph break around attention): the compiler would unroll the
    # backward's Python loops, and on CPU it would pick SDPA's slower backward anyway.
    return _CausalAttention.apply(q, k, v, allowed)


def explicit_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> bool:
    """True where `attend` computes the scores explicitly (see the module docstring)."""
    B, H, T, _ = q.shape
    return (q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
            and k.shape[1] == H
            # with dropout SDPA's math path stores every score too, so no cap; without, its flash path does not
            and (dropout > 0.0 or (q.dtype == torch.bfloat16 and B * H * T * k.shape[2] <= EXPLICIT_MAX_SCORES)))


class _ExplicitAttention(torch.autograd.Function):
    """P = softmax(scale · Q Kᵀ + mask), dropped, times V, keeping for backward only P in the inputs' dtype and
    the dropout's bool mask, 3 bytes per score; autograd of the same ops keeps P in fp32 as well, 7 bytes per score
    (85 instead of 198 MB per MiniLM layer at 16 x 384 tokens). Backward rebuilds the dropped P from the two."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                dropout: float) -> torch.Tensor:
        # q (B, H, T, hd), k, v (B, H, S, hd), mask broadcast to (B, H, T, S), True = may attend -> (B, H, T, hd)
        scale = q.shape[-1] ** -0.5
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
        probs = scores.float().softmax(-1).to(q.dtype)  # (B, H, T, S): softmax in fp32, as BERT's eager code
        del scores
        keep, factor = None, 1.0
        if dropout > 0.0:
            keep, p_used = keep_mask(probs.shape, dropout, probs.device)  # kernels/dropout.py's mask
            factor = 1.0 / (1.0 - p_used)
        ctx.factor = factor
        ctx.save_for_backward(q, k, v, probs, keep)
        return torch.matmul(probs if keep is None else probs * keep * factor, v)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, probs, keep = ctx.saved_tensors
        grad_out = grad_out.to(q.dtype)
        dropped = probs if keep is None else probs * keep * ctx.factor  # (B, H, T, S), rebuilt, not stored
        dv = torch.matmul(dropped.transpose(-2, -1), grad_out)
        del dropped
        d_probs = torch.matmul(grad_out, v.transpose(-2, -1))  # (B, H, T, S)
        if keep is not None:
            d_probs = d_probs * keep * ctx.factor
        # softmax backward dS = P (dP - rowsum(P dP)), rows in fp32 inside the kernel; masked keys have P = 0
        d_scores = torch._softmax_backward_data(d_probs, probs, -1, probs.dtype).mul_(q.shape[-1] ** -0.5)
        del d_probs
        dq = torch.matmul(d_scores, k)
        dk = torch.matmul(d_scores.transpose(-2, -1), q)
        return dq, dk, dv, None, None


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                       dropout: float, causal: bool) -> torch.Tensor:
    """`sdpa_attention` (same arguments, key-value heads = query heads) as plain ops: see the module docstring.

    A query row with no allowed key gets a uniform average instead of SDPA's zeros or NaN; no task reads
    such a row (it is a pad).
    """
    T, S = q.shape[2], k.shape[2]
    if mask is None and causal:
        mask = torch.arange(S, device=q.device)[None, :] <= torch.arange(S - T, S, device=q.device)[:, None]  # (T, S)
    return _ExplicitAttention.apply(q, k, v, mask, dropout)  # without gradients: its forward, nothing kept


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], dropout: float,
           causal: bool) -> torch.Tensor:
    """`sdpa_attention` (same arguments) with the blocked backward or the explicit scores where they apply
    (see the module docstring).

    A causal model's mask with T == S already holds the causal rule, so it is the blocked kernel's `allowed`.
    """
    if causal and blocked_backward_applies(q, k, v, dropout):
        return _blocked_attention(q, k, v, mask)
    if explicit_applies(q, k, v, dropout):
        return explicit_attention(q, k, v, mask, dropout, causal)
    return sdpa_attention(q, k, v, mask, dropout, causal)


def right_padded_mask(cfg: ModelConfig, attention_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
                      T: int, S: int, device: torch.device) -> Optional[torch.Tensor]:
    """`build_mask` (same arguments), but None (plain causal) for right-padded causal batches.

    Checking that the padding is on the right reads one flag back from the device: one host sync per forward.
    """
    if (cfg.causal and segment_ids is None and T == S and attention_mask is not None
            and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())):
        return None
    return build_mask(cfg, attention_mask, segment_ids, T, S, device)
