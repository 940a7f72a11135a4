"""--compile and --grad-checkpointing reach the backbone, and a step's frozen weights get no gradients."""

from __future__ import annotations

import torch

from lightft.config import ModelConfig
from lightft.model import Transformer, init_weights
from lightft.options import Options
from lightft.train.module import prepare_backbone


def tiny_llama() -> Transformer:
    cfg = ModelConfig(family="llama", vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=24, causal=True, lm_head=True, tie_embeddings=True, mlp="gated",
                      norm="rmsnorm", position="rope", activation="silu", pre_norm=True)
    model = Transformer(cfg)
    init_weights(model)
    return model


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
