"""lightft/kernels/dropout.py against the reference dropout: the rate, the scaling of kept elements, the
gradient, seeded reproducibility, and where it hands over to the reference."""

from __future__ import annotations

import pytest
import torch

from lightft.kernels import KERNEL_OPS
from lightft.kernels.dropout import fast_dropout, keep_mask
from lightft.model import Ops, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_p(p):
    torch.manual_seed(0)
    keep, p_used = keep_mask(torch.Size([400, 1000]), p, torch.device("cpu"))
    assert abs(p_used - p) <= 1 / 131072
    # 400k draws: the share's standard deviation is below 0.0008; 5 of them
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=0.004)
    # each of the four 16-bit quarters of a word is uniform (the top one included): same rate in each
    quarters = keep.flatten()[: 400 * 1000 // 4 * 4].view(-1, 4).float().mean(0)
    assert torch.allclose(quarters, torch.full((4,), 1 - p), atol=0.008)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_elements_are_scaled_like_the_reference_and_the_gradient_is_the_mask(dtype):
    torch.manual_seed(1)
    x = (torch.rand(64, 128) + 0.5).to(dtype).requires_grad_(True)  # no zeros: a zero output means dropped
    y = fast_dropout(x, 0.25, True)
    assert y.dtype == dtype
    kept = y != 0
    scale = 1 / (1 - 0.25)  # 0.25 * 65536 is whole: p' = p
    assert torch.equal(y[kept], (x.detach()[kept] * scale).to(dtype))
    y.sum().backward()
    assert torch.equal(x.grad, (kept.to(dtype) * scale).to(dtype))


def test_seeded_draws_repeat_and_off_cases_are_the_reference():
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.1, True)
    torch.manual_seed(3)
    assert torch.equal(a, fast_dropout(x, 0.1, True))
    for p, training in ((0.1, False), (0.0, True)):
        assert torch.equal(fast_dropout(x, p, training), dropout(x, p, training))
        assert torch.equal(fast_dropout(x, p, training), x)


def test_the_switch_installs_it_and_the_reference_stays_default():
    assert KERNEL_OPS.drop is fast_dropout and Ops().drop is dropout


def test_activation_checkpointing_replays_the_same_masks(hf_folder):
    """The recomputed forward of a checkpointed block draws the same masks: gradients equal those without it."""
    from lightft.checkpoint import load_model
    from lightft.kernels import use_kernels

    _, folder = hf_folder("bert", hidden_dropout_prob=0.3)
    grads = []
    for checkpointing in (False, True):
        model = use_kernels(load_model(folder), "auto").requires_grad_(True).train()
        model.gradient_checkpointing = checkpointing
        torch.manual_seed(0)
        ids = torch.randint(5, 99, (4, 12))
        model(ids, attention_mask=torch.ones_like(ids), return_logits=False).hidden_states.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])


def test_lora_input_dropout_follows_the_switch(hf_folder):
    """LoRA's input dropout draws through the model's `ops` like the blocks' own: the cheap mask under "auto",
    torch's under "off" (one `Ops` object, changed in place by the switch); the rate and scale hold."""
    from lightft.checkpoint import load_model
    from lightft.kernels import use_kernels
    from lightft.lora import apply_lora, lora_layers

    _, folder = hf_folder("llama")
    model = load_model(folder)
    apply_lora(model, "all-linear", r=4, dropout=0.25)
    layers = [layer for _, layer in lora_layers(model)]
    use_kernels(model, "auto")
    assert all(layer.lora_dropout.ops.drop is fast_dropout and layer.lora_dropout.p == 0.25 for layer in layers)
    drop = layers[0].lora_dropout.train()
    kept = drop(torch.ones(200, 500))  # (200, 500): 100k draws
    assert torch.allclose(kept[kept != 0], torch.tensor(1 / 0.75))
    assert abs((kept == 0).float().mean().item() - 0.25) < 0.01
    use_kernels(model, "off")
    assert all(layer.lora_dropout.ops.drop is dropout for layer in layers)
