"""Packed bf16 inference weights (lightft/kernels/packed.py): same outputs, same greedy tokens, safe refusals."""

from __future__ import annotations

import pytest
import torch

from lightft import load_model
from lightft.generate import SamplingOptions, generate_ids
from lightft.kernels.packed import PackedLinear, PackedRows, pack_linears, packing_available
from lightft.lora import apply_lora

needs_packing = pytest.mark.skipif(not packing_available(torch.zeros(1, dtype=torch.bfloat16)),
                                   reason="oneDNN bf16 packing is not available in this torch build")


@needs_packing
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_model_gives_the_same_logits_and_tokens(hf_folder, family):
    _, path = hf_folder(family)
    plain, packed = load_model(path, dtype="bfloat16"), load_model(path, dtype="bfloat16")
    linears = sum(isinstance(m, torch.nn.Linear) for m in packed.modules())  # blocks' + LM head
    assert pack_linears(packed) == linears
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())
    assert isinstance(packed.lm_head, PackedLinear)
    if family == "llama":  # q/k/v and gate/up packed together: four matmuls per block
        assert sum(isinstance(m, PackedLinear) for m in packed.layers[0].modules()) == 4
    ids = torch.randint(3, 90, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, plain(ids).logits, rtol=2e-2, atol=2e-2)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    opts = SamplingOptions(max_new_tokens=8)
    assert ([g.token_ids for g in generate_ids(packed, prompts, opts, eos=set())]
            == [g.token_ids for g in generate_ids(plain, prompts, opts, eos=set())])


def test_fp32_models_are_left_as_they_are(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path)
    assert pack_linears(model) == 0
    assert not any(isinstance(m, PackedLinear) for m in model.modules())


@needs_packing
def test_unmerged_lora_is_refused(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path, dtype="bfloat16")
    apply_lora(model, "q,v", r=2)
    with pytest.raises(ValueError, match="merge LoRA"):
        pack_linears(model)


def test_fusing_keeps_outputs_parameters_state_dict_and_config(hf_folder):
    """`fuse_qkv` / `fuse_gate_up` (model.py): one matmul per group, nothing else about the model changes."""
    _, path = hf_folder("llama", num_key_value_heads=2)
    plain, fused = load_model(path), load_model(path)
    keys, cfg = list(fused.state_dict()), fused.cfg
    for block in fused.layers:
        block.attn.fuse_qkv()
        block.mlp.fuse_gate_up()
        attn, mlp = block.attn, block.mlp
        stacked = attn.qkv_proj.weight  # the parts' weights are views of it: no memory added
        assert attn.q_proj.weight.data_ptr() == stacked.data_ptr()
        assert attn.v_proj.weight.data_ptr() == stacked[-attn.v_proj.out_features:].data_ptr()
        assert mlp.up_proj.weight.data_ptr() == mlp.gate_up_proj.weight[mlp.gate_proj.out_features:].data_ptr()
    assert list(fused.state_dict()) == keys and fused.cfg is cfg and not cfg.fused_qkv
    ids = torch.randint(3, 90, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packing_layout_where_onednn_is_missing(monkeypatch, hf_folder, family):
    """The same packing on any CPU, with oneDNN's two ops replaced by their plain equivalents: every linear is
    replaced, q/k/v and gate/up by one packed matmul each whose parts stay as row views, and the logits
    and greedy tokens do not change."""
    from lightft.kernels import packed as packed_module

    monkeypatch.setattr(packed_module, "packing_available", lambda weight: True)
    monkeypatch.setattr(packed_module, "_pack", lambda weight: weight.clone())
    monkeypatch.setattr(packed_module, "_packed_matmul", lambda x, w, b: torch.nn.functional.linear(x, w, b))
    _, path = hf_folder(family)
    plain, packed = load_model(path), load_model(path)
    names = {n for n, m in packed.named_modules() if isinstance(m, torch.nn.Linear)}
    assert pack_linears(packed) == len(names)
    assert {n for n, m in packed.named_modules() if isinstance(m, (PackedLinear, PackedRows))} >= names  # none gone
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())
    if family == "llama":
        attn = packed.layers[0].attn
        assert sum(isinstance(m, PackedLinear) for m in packed.layers[0].modules()) == 4
        assert isinstance(attn.k_proj, PackedRows) and attn.k_proj.packed is attn.qkv_proj.packed
    ids = torch.randint(3, 90, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
        x = torch.randn(3, plain.cfg.hidden_size)
        first = plain.layers[0].attn
        part = first.k_proj if family == "llama" else first.qkv_proj
        torch.testing.assert_close(packed.layers[0].attn.get_submodule(
            "k_proj" if family == "llama" else "qkv_proj")(x), part(x), rtol=1e-5, atol=1e-5)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    opts = SamplingOptions(max_new_tokens=8)
    assert ([g.token_ids for g in generate_ids(packed, prompts, opts, eos=set())]
            == [g.token_ids for g in generate_ids(plain, prompts, opts, eos=set())])
