"""--compile and --grad-checkpointing reach the backbone, and a step's frozen weights get no gradients."""

from __future__ import annotations

import pytest
import torch

from tiny_decoder import tiny_llama
from lightft.options import Options
from lightft.runs.backbone import prepare_backbone


def test_compile_wraps_every_block_and_keeps_state_dict_keys():
    model = tiny_llama()
    keys = set(model.state_dict())
    prepare_backbone(model, Options(lora=True, lora_targets="q,v", compile=True, grad_checkpointing=True))
    assert all(block._compiled_call_impl is not None for block in model.layers)
    assert model.gradient_checkpointing
    assert {k for k in model.state_dict() if "lora_" not in k} == keys  # checkpoints are unchanged


def test_lora_step_leaves_frozen_weights_without_gradients():
    model = tiny_llama()
    prepare_backbone(model, Options(lora=True, lora_targets="q,v", lora_dropout=0.0))
    model(torch.randint(0, 50, (2, 7)), return_logits=True).logits.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


@pytest.mark.parametrize("chunk,rows", [(5, 32), (5, 2), (16, 3)])
def test_linear_cross_entropy_matches_autograd_reference(monkeypatch, chunk, rows):
    """Loss and both gradients equal plain lm_head + F.cross_entropy, across chunk and row-block boundaries."""
    import torch.nn.functional as F

    from lightft.tasks import causal_lm
    from lightft.tasks.causal_lm import next_token_nll

    monkeypatch.setattr(causal_lm, "ROWS", rows)

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
