"""DoRA (lightft/lora/dora.py) against PEFT's (oracle): same A / B / magnitude -> same outputs, adapters
both ways, merge == unmerged, gradients, and the options that refuse it."""

from __future__ import annotations

import json

import pytest
import torch

from lightft import load_model
from lightft.lora import (DoRALinear, apply_lora, load_adapter, lora_layers, lora_parameters, merge_lora,
                          save_adapter, save_merged, unmerge_lora)
from lightft.lora.peft_io import hf_module_path
from lightft.quant import quantize_linears

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

FAMILIES = {"bert": {}, "gpt2": {}, "llama": {"num_key_value_heads": 2}}
HF_TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}
ATOL = 1e-5


def _ids():
    return torch.randint(3, 99, (2, 11), generator=torch.Generator().manual_seed(3))


def _ours(model, ids):
    out = model(ids)
    return out.logits if out.logits is not None else out.hidden_states


def _theirs(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _randomise(model, seed=7):
    """Random A, B and magnitudes (B = 0 and m = ‖W‖ would make every DoRA equal to the base model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.2)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.2)
            layer.lora_magnitude_vector.mul_(1 + 0.3 * torch.randn(layer.lora_magnitude_vector.shape, generator=g))
    return model


@pytest.fixture(params=list(FAMILIES))
def family(request, hf_folder):
    hf_model, path = hf_folder(request.param, **FAMILIES[request.param])
    return request.param, hf_model, path


def _dora_model(path, targets="q,v"):
    model = load_model(path).eval()
    apply_lora(model, targets, r=4, alpha=8, dora=True)
    return _randomise(model)


def test_magnitude_starts_at_the_row_norms_and_output_at_the_base(family):
    _, _, path = family
    base = load_model(path).eval()
    model = load_model(path).eval()
    apply_lora(model, "q,v", r=4, alpha=8, dora=True)
    for _, layer in lora_layers(model):
        assert isinstance(layer, DoRALinear)
        torch.testing.assert_close(layer.lora_magnitude_vector, layer.weight.norm(dim=1))
    with torch.no_grad():
        torch.testing.assert_close(_ours(model, _ids()), _ours(base, _ids()), rtol=0, atol=1e-6)


def test_same_a_b_magnitude_same_outputs_as_peft(family):
    name, hf_model, path = family
    ours = _dora_model(path)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=HF_TARGETS[name], use_dora=True,
                          fan_in_fan_out=name == "gpt2")
    theirs = peft.get_peft_model(hf_model, cfg).eval()
    modules = dict(theirs.named_modules())
    with torch.no_grad():
        for mod_name, layer in lora_layers(ours):
            target = modules["base_model.model." + hf_module_path(ours, mod_name)]
            target.lora_A["default"].weight.copy_(layer.lora_A)
            target.lora_B["default"].weight.copy_(layer.lora_B)
            target.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude_vector)
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


def test_exported_dora_adapter_loads_in_peft(family, tmp_path):
    _, hf_model, path = family
    ours = _dora_model(path, "all-linear")
    save_adapter(ours, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    theirs = peft.PeftModel.from_pretrained(hf_model, tmp_path / "adapter").eval()
    with torch.no_grad():
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


def test_peft_dora_adapter_imports_into_lightft(family, tmp_path):
    name, hf_model, path = family
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=HF_TARGETS[name], fan_in_fan_out=name == "gpt2",
                          use_dora=True, init_lora_weights=False)  # random B, so the adapter changes the output
    theirs = peft.get_peft_model(hf_model, cfg).eval()
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1.2)  # magnitudes away from the row norms too
    theirs.save_pretrained(tmp_path / "peft")
    ours = load_model(path).eval()
    load_adapter(ours, tmp_path / "peft")
    assert all(isinstance(layer, DoRALinear) for _, layer in lora_layers(ours))
    with torch.no_grad():
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


def test_merge_equals_unmerged_and_merged_export_matches_peft(family, tmp_path):
    name, hf_model, path = family
    ours = _dora_model(path, "all-linear")
    ids = _ids()
    with torch.no_grad():
        before = _ours(ours, ids)
        weights = {n: layer.weight.clone() for n, layer in lora_layers(ours)}
        merge_lora(ours)
        merge_lora(ours)  # idempotent
        torch.testing.assert_close(_ours(ours, ids), before, rtol=ATOL, atol=ATOL)
        unmerge_lora(ours)
        for n, layer in lora_layers(ours):
            torch.testing.assert_close(layer.weight, weights[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(_ours(ours, ids), before, rtol=ATOL, atol=ATOL)
        save_merged(ours, tmp_path / "merged")
        reloaded = type(hf_model).from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(_theirs(reloaded, ids), before, rtol=ATOL, atol=ATOL)


def test_gradients_reach_a_b_and_magnitude_only(hf_folder):
    _, path = hf_folder("llama")
    model = _dora_model(path)
    model.train()
    _ours(model, _ids()).square().mean().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 1)[1] for n in trained} == {"lora_A", "lora_B", "lora_magnitude_vector"}
    assert len(list(lora_parameters(model))) == 3 * len(list(lora_layers(model)))


def test_qdora_equals_dora_on_the_dequantised_base(hf_folder):
    """DoRA on an NF4 base (QDoRA) computes the same as DoRA on the dequantised weights."""
    from lightft.lora import merged_state_dict

    _, path = hf_folder("llama")
    q = load_model(path).eval()
    quantize_linears(q)
    ref = load_model(path).eval()
    ref.load_state_dict(merged_state_dict(q), strict=False)
    for m in (q, ref):
        apply_lora(m, "all-linear", r=4, alpha=8, dora=True)
        _randomise(m)
    with torch.no_grad():
        torch.testing.assert_close(_ours(q, _ids()), _ours(ref, _ids()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--full", "--dora"], "error: --dora has no effect with --full (it sets up LoRA); drop it, or train with --lora"),
    (["--dora", "--freeze", "backbone"], "error: --dora trains LoRA layers, but --freeze backbone trains the head "
                                          "only: drop one of them"),
])
def test_dora_where_it_cannot_apply(tmp_path, capsys, args, message):
    from lightft.cli.main import main
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    model = make_tiny_model(tmp_path / "bert")
    data = write_classify_jsonl(tmp_path / "train.jsonl", 20)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", "classify", "--model", str(model), "--train", str(data), "--out", str(tmp_path / "run"),
              "--max-steps", "1", "--no-progress", *args])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()
