"""Causal language modelling (`lm`, `instruct`): next-token loss on labelled positions only, perplexity.

The backbone runs without its LM head (`return_logits=False`); hidden states are gathered at the
positions whose next token has a label, and cross-entropy goes through `lm_head` in chunks whose
gradients are taken in the same pass (`LinearCrossEntropy`), so full-vocabulary logits exist for at
most `chunk` positions at a time — never for padding or prompt tokens — and are never recomputed. For `instruct` the labels
cover responses only, so loss and perplexity are response-token figures.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric

from lightft.errors import LightftError
from lightft.tasks.module import TaskModule

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


def next_token_nll(lm_head: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor,
                   chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token NLL, number of labelled tokens) for hidden (B, T, H) and labels (B, T).

    Position t predicts labels[t + 1]; positions whose next label is -100 are never projected.
    """
    assert lm_head.bias is None, "LM heads have no bias in the supported families"
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != -100
    h = hidden[:, :-1][keep]  # (N, H): only the labelled positions
    y = targets[keep]  # (N,)
    total = LinearCrossEntropy.apply(h, lm_head.weight, y, chunk)
    return total, torch.tensor(y.numel(), device=hidden.device)


class CausalLMModule(TaskModule):
    """No head of its own: the backbone's `lm_head` (trained under --full, frozen under LoRA) scores tokens."""

    task = "lm"
    monitor, monitor_mode = "val_loss", "min"

    def build_head(self, **task_args: Any) -> nn.Module:
        if self.backbone.lm_head is None or not self.backbone.cfg.causal:
            raise LightftError(f"task {self.task!r} needs a decoder with an LM head (GPT-2 or Llama family); "
                               f"this model is a {self.backbone.cfg.family} encoder")
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({"nll": SumMetric(), "tokens": SumMetric()})
                                      for stage in ("val", "test")})
        return nn.Module()  # nothing task-specific to train

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                            position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids"),
                            return_logits=False)
        nll, n = next_token_nll(self.backbone.lm_head, out.hidden_states, batch["labels"])
        return {"nll_sum": nll, "n_tokens": n}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        return out["nll_sum"] / out["n_tokens"].clamp(min=1)

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        self.metrics[stage]["nll"].update(out["nll_sum"].detach())
        self.metrics[stage]["tokens"].update(out["n_tokens"].float())

    def metrics_for(self, stage: str) -> dict[str, float]:
        """Token-weighted loss over the whole split (the logged `loss` averages batches) and its exp."""
        nll, n = self.metrics[stage]["nll"].compute(), self.metrics[stage]["tokens"].compute()
        for m in self.metrics[stage].values():
            m.reset()
        token_loss = nll / n.clamp(min=1)
        return {"token_loss": token_loss, "perplexity": torch.exp(token_loss), "tokens": n}

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        raise LightftError(f"predict is not defined for {self.task}: use `lightft eval {self.task}` for loss "
                           "and perplexity, or `lightft generate` for text")


class InstructModule(CausalLMModule):
    task = "instruct"
