"""The LM-head loss in cache-sized chunks, its gradients taken in the same pass: `linear_cross_entropy`.

Speeds up: the causal-LM loss (lightft/tasks/causal_lm.py), whose plain form projects every labelled
position onto the whole vocabulary, keeps those logits for backward and projects the gradients back
in a second pass. Equals: `F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")`,
the task's reference (tests/test_kernel_cross_entropy.py compares the loss and both gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 256  # labelled positions per lm_head matmul (256 x 49k vocab: 25 MB of bf16 logits)
ROWS = 32  # rows per softmax pass: 32 x 49k fp32 = 6 MB, so the passes over a row block stay in cache


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weightᵀ` by chunks of rows, gradients computed in the same pass.

    d(sum of CE)/d(logits) = softmax − one-hot is known as soon as a chunk's logits are, so each chunk
    turns its logits straight into the gradient w.r.t. `hidden` (N, H) — and w.r.t. `weight` when it
    trains — and frees them. Backward only scales what forward kept: no second LM-head pass (what
    activation checkpointing would cost) and never more than `chunk` rows of logits alive.

    Speed: the matmuls are a third of the time; the rest is memory traffic over the (rows, vocab)
    fp32 block (log-softmax, exp, the cast back). Running those passes on `ROWS` rows at a time keeps
    each block in cache between passes, about 2x faster than whole-chunk passes on a 2-core CPU
    (benchmarks/RESULTS.md, issue 7). Log-softmax in fp32 keeps the loss exact for any logit gap.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, targets.numel(), chunk):
            hc = hidden[start : start + chunk]
            logits = F.linear(hc, weight)  # (n, vocab), in the matmul dtype (bf16 under autocast)
            d = torch.empty_like(logits) if (need_h or need_w) else None  # d(sum CE)/d(logits)
            n = logits.shape[0]
            per_pass = ROWS if logits.device.type == "cpu" else n  # a GPU wants few large kernels instead
            for row in range(0, n, per_pass):
                end = min(row + per_pass, n)
                yc = targets[start + row : start + end]
                picked = torch.arange(end - row, device=yc.device)
                logp = torch.log_softmax(logits[row:end], dim=-1, dtype=torch.float32)  # (rows, vocab)
                total -= logp[picked, yc].sum()
                if d is not None:
                    probs = logp.exp_()  # softmax, in place
                    probs[picked, yc] -= 1.0
                    d[row:end] = probs  # cast to the logits dtype
            if need_h:
                grad_h[start : start + chunk] = (d @ weight.to(d.dtype)).to(hidden.dtype)
            if need_w:
                grad_w += (d.t() @ hc.to(d.dtype)).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = CHUNK) -> torch.Tensor:
    """Summed cross-entropy of `hidden` (N, H) @ `weight`ᵀ (V, H) against `targets` (N,), `chunk` rows at a time."""
    return LinearCrossEntropy.apply(hidden, weight, targets, chunk)
