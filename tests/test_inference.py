"""Packed bf16 inference weights (lightft/inference.py): same outputs, same greedy tokens, safe refusals."""

from __future__ import annotations

import pytest
import torch

from lightft import load_model
from lightft.generate import SamplingOptions, generate_ids
from lightft.inference import PackedLinear, pack_linears, packing_available
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
