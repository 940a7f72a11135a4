"""The chunked LM-head loss (lightft/kernels/cross_entropy.py) against lm_head + F.cross_entropy under autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightft.kernels import cross_entropy
from lightft.tasks.causal_lm import next_token_nll


@pytest.mark.parametrize("chunk,rows", [(5, 32), (5, 2), (16, 3)])
def test_linear_cross_entropy_matches_autograd_reference(monkeypatch, chunk, rows):
    """Loss and both gradients equal plain lm_head + F.cross_entropy, across chunk and row-block boundaries."""
    monkeypatch.setattr(cross_entropy, "ROWS", rows)

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(2, 9, 8, requires_grad=True)
    labels = torch.randint(0, 30, (2, 9))
    labels[0, :4] = -100  # a prompt: no loss there
    total, n = next_token_nll(head, hidden, labels, chunk=chunk)
    total.backward()
    ours = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    logits = head(hidden)[:, :-1].reshape(-1, 30)
    ref = F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    ref.backward()
    assert int(n) == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(total, ref)
    torch.testing.assert_close(ours[0], hidden.grad)
    torch.testing.assert_close(ours[1], head.weight.grad)
