"""LoRA interoperability with `peft` + `transformers` (oracles): same outputs, adapters and merged weights both ways."""

from __future__ import annotations

import json

import pytest
import torch

from lightft import LightftError, load_model
from lightft.lora import apply_lora, load_adapter, lora_layers, merge_lora, save_adapter, save_merged
from lightft.lora.peft_io import hf_module_path
from tests.conftest import save_hf, tiny_hf_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

FAMILIES = {"bert": {}, "gpt2": {}, "llama": {"num_key_value_heads": 2}}  # llama with GQA
HF_QV = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}  # PEFT's own names
ATOL = 1e-5  # fp32; the base-model parity tests use 1e-4


def _ids():
    return torch.randint(3, 99, (2, 11), generator=torch.Generator().manual_seed(3))


def _ours(model, ids):
    out = model(ids)
    return out.logits if out.logits is not None else out.hidden_states


def _theirs(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _lora_model(path, targets="q,v", rslora=False):
    model = load_model(path).eval()
    apply_lora(model, targets, r=4, alpha=8, rslora=rslora)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.2)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.2)
    return model


@pytest.fixture(params=list(FAMILIES))
def family(request, hf_folder):
    hf_model, path = hf_folder(request.param, **FAMILIES[request.param])
    return request.param, hf_model, path


@pytest.mark.parametrize("rslora", [False, True])
def test_same_a_b_same_outputs_as_peft(family, rslora):
    name, hf_model, path = family
    ours = _lora_model(path, rslora=rslora)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=HF_QV[name], use_rslora=rslora,
                          fan_in_fan_out=name == "gpt2")
    theirs = peft.get_peft_model(hf_model, cfg).eval()
    modules = dict(theirs.named_modules())
    with torch.no_grad():
        for mod_name, layer in lora_layers(ours):
            target = modules["base_model.model." + hf_module_path(ours, mod_name)]
            target.lora_A["default"].weight.copy_(layer.lora_A)
            target.lora_B["default"].weight.copy_(layer.lora_B)
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


@pytest.mark.parametrize("targets", ["q,v", "all-linear"])
def test_exported_adapter_loads_in_peft(family, tmp_path, targets):
    name, hf_model, path = family
    ours = _lora_model(path, targets)
    save_adapter(ours, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] == (name == "gpt2")
    theirs = peft.PeftModel.from_pretrained(hf_model, tmp_path / "adapter").eval()
    n_theirs = sum(1 for n, _ in theirs.named_modules() if n.endswith("lora_A"))
    assert n_theirs == len(list(lora_layers(ours)))  # target_modules picked exactly our layers
    with torch.no_grad():
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


def test_peft_adapter_imports_into_lightft(family, tmp_path):
    name, hf_model, path = family
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=HF_QV[name], fan_in_fan_out=name == "gpt2",
                          init_lora_weights=False)  # random B, so the adapter changes the output
    theirs = peft.get_peft_model(hf_model, cfg).eval()
    theirs.save_pretrained(tmp_path / "peft")
    ours = load_model(path).eval()
    wrapped = load_adapter(ours, tmp_path / "peft")
    assert wrapped and all(p.requires_grad == ("lora_" in n) for n, p in ours.named_parameters())
    with torch.no_grad():
        ids = _ids()
        torch.testing.assert_close(_ours(ours, ids), _theirs(theirs, ids), rtol=ATOL, atol=ATOL)


def test_merged_export_loads_in_transformers(family, tmp_path):
    name, hf_model, path = family
    ours = _lora_model(path, "all-linear")
    save_merged(ours, tmp_path / "merged")
    assert not any(layer.merged for _, layer in lora_layers(ours))  # exporting leaves the model as it was
    from safetensors import safe_open

    def shapes(file):
        with safe_open(str(file), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    assert shapes(tmp_path / "merged" / "model.safetensors") == shapes(path / "model.safetensors")
    reloaded = type(hf_model).from_pretrained(tmp_path / "merged").eval()
    merge_lora(ours)
    with torch.no_grad():
        ids = _ids()
        torch.testing.assert_close(_theirs(reloaded, ids), _ours(ours, ids), rtol=ATOL, atol=ATOL)


def test_adapter_for_other_base_is_refused(hf_folder, tmp_path):
    _, small = hf_folder("llama")
    big = save_hf(tiny_hf_model("llama", hidden_size=48), tmp_path / "big")
    save_adapter(_lora_model(big), tmp_path / "adapter")
    model = load_model(small)
    with pytest.raises(LightftError, match=r"layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \(4, 48\) "
                                           r"but this model needs \(4, 32\)"):
        load_adapter(model, tmp_path / "adapter")
    assert not list(lora_layers(model))  # refused before touching the model


def test_adapter_bad_folders(hf_folder, tmp_path):
    _, path = hf_folder("llama")
    save_adapter(_lora_model(path), tmp_path / "a")
    cfg_file = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(LightftError, match="lacks lora_magnitude_vector"):  # DoRA without its magnitudes
        load_adapter(load_model(path), tmp_path / "a")
    cfg_file.write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(LightftError, match="only LORA"):
        load_adapter(load_model(path), tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").unlink()
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(LightftError, match="missing adapter_model.safetensors"):
        load_adapter(load_model(path), tmp_path / "a")
    _, gpt2 = hf_folder("gpt2")
    save_adapter(_lora_model(gpt2), tmp_path / "g")
    with pytest.raises(LightftError, match="names no linear layer"):
        load_adapter(load_model(path), tmp_path / "g")
    with pytest.raises(LightftError, match="no LoRA layers to export"):
        save_adapter(load_model(path), tmp_path / "none")
