"""--compile and --grad-checkpointing reach the backbone, and a step's frozen weights get no gradients."""

from __future__ import annotations

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
