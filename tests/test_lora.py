"""LoRA behaviour on lightft models: identity at init, merge/unmerge, trainable parameters, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightft import LightftError, load_model
from lightft.lora import (LoRALinear, apply_lora, lora_layers, lora_parameters, mark_trainable, merge_lora,
                          unmerge_lora)

FAMILIES = {"bert": {}, "gpt2": {}, "llama": {"num_key_value_heads": 2}}  # llama with GQA


def _out(model, ids):
    out = model(ids)
    return out.logits if out.logits is not None else out.hidden_states


def _randomise_b(model, seed=0):
    """B starts at zero; give it values so the LoRA path actually changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


@pytest.fixture(params=list(FAMILIES))
def family_model(request, hf_folder):
    _, path = hf_folder(request.param, **FAMILIES[request.param])
    return request.param, path


def test_identity_at_init_then_merge_unmerge(family_model):
    _, path = family_model
    model = load_model(path).eval()
    ids = torch.randint(3, 99, (2, 9))
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        base = _out(model, ids)
        apply_lora(model, "all-linear", r=4, alpha=8)
        torch.testing.assert_close(_out(model, ids), base, rtol=0, atol=0)  # B = 0: exactly the base model
        _randomise_b(model)
        unmerged = _out(model, ids)
        assert not torch.allclose(unmerged, base, atol=1e-4)
        merge_lora(model)
        merge_lora(model)  # twice is harmless
        assert all(layer.merged for _, layer in lora_layers(model))
        torch.testing.assert_close(_out(model, ids), unmerged, rtol=0, atol=1e-5)
        unmerge_lora(model)
        unmerge_lora(model)
        torch.testing.assert_close(_out(model, ids), unmerged, rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(p, base_weights[name], rtol=0, atol=1e-6)


def test_state_dict_of_base_loads_into_lora_model(family_model):
    _, path = family_model
    model = load_model(path)
    base_state = model.state_dict()
    apply_lora(model, "attn", r=2, alpha=4)
    missing, unexpected = model.load_state_dict(base_state, strict=False)
    assert not unexpected and all(k.endswith(("lora_A", "lora_B")) for k in missing)


def test_only_lora_and_head_train(family_model):
    family, path = family_model
    model = load_model(path)
    apply_lora(model, "q,v", r=4, alpha=8, dropout=0.1)
    _randomise_b(model)
    head = nn.Linear(model.cfg.hidden_size, 3)  # a task head lives outside the backbone
    lora = {id(p) for p in lora_parameters(model)}
    assert {id(p) for p in model.parameters() if p.requires_grad} == lora
    model.train()
    loss = head(model(torch.randint(3, 99, (2, 7))).hidden_states).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        if id(p) in lora:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert head.weight.grad is not None
    n_layers = model.cfg.num_layers
    expected_layers = n_layers if family == "gpt2" else 2 * n_layers  # q and v are one fused layer in GPT-2
    assert len(list(lora_layers(model))) == expected_layers


def test_modes_full_head_and_frozen_embeddings(hf_folder):
    _, path = hf_folder("gpt2")
    model = load_model(path)
    total = model.num_parameters()
    assert mark_trainable(model, "full") == total
    frozen_emb = mark_trainable(model, "full", freeze_embeddings=True)
    assert not model.embed_tokens.weight.requires_grad and not model.embed_positions.weight.requires_grad
    assert frozen_emb == total - model.embed_tokens.weight.numel() - model.embed_positions.weight.numel()
    assert mark_trainable(model, "head") == 0
    with pytest.raises(LightftError, match="apply_lora"):
        mark_trainable(model, "lora")
    with pytest.raises(LightftError, match="choose lora, full or head"):
        mark_trainable(model, "everything")
    apply_lora(model, "q", r=2, alpha=2)
    with pytest.raises(LightftError, match="does not use LoRA"):
        mark_trainable(model, "full")


def test_targets_map_per_family(hf_folder):
    _, llama = hf_folder("llama")
    model = load_model(llama)
    paths = apply_lora(model, ["mlp", "o"], r=2, alpha=4)
    assert paths[:4] == ["layers.0.attn.o_proj", "layers.0.mlp.down_proj", "layers.0.mlp.gate_proj",
                         "layers.0.mlp.up_proj"]
    assert isinstance(model.layers[1].mlp.gate_proj, LoRALinear)
    assert not isinstance(model.layers[1].attn.q_proj, LoRALinear)


def test_rslora_scaling(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path)
    apply_lora(model, "q", r=4, alpha=8, rslora=True)
    assert model.layers[0].attn.q_proj.scaling == pytest.approx(8 / 2)


def test_bf16_merge_keeps_update(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path, dtype="bfloat16")
    apply_lora(model, "q,v", r=4, alpha=8)
    assert model.layers[0].attn.q_proj.lora_A.dtype == torch.bfloat16
    _randomise_b(model)
    ids = torch.randint(3, 99, (1, 6))
    with torch.no_grad():
        before = model(ids).logits.float()
        merge_lora(model)
        after = model(ids).logits.float()
    torch.testing.assert_close(after, before, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_unknown_target_lists_valid_ones(hf_folder, family):
    _, path = hf_folder(family)
    model = load_model(path)
    with pytest.raises(LightftError, match=r"'gate' is not valid for the .* valid targets: q, k, v, o, up, down"):
        apply_lora(model, "q,gate", r=4, alpha=8)
    with pytest.raises(LightftError, match="no LoRA targets"):
        apply_lora(model, " , ", r=4, alpha=8)
    assert not list(lora_layers(model))  # nothing was changed by the failed calls


@pytest.mark.parametrize("r", [0, -2, 1.5])
def test_bad_rank(hf_folder, r):
    _, path = hf_folder("llama")
    with pytest.raises(LightftError, match="rank r must be a positive integer"):
        apply_lora(load_model(path), "q", r=r, alpha=8)


def test_bad_dropout_and_double_apply(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path)
    with pytest.raises(LightftError, match="dropout"):
        apply_lora(model, "q", r=2, alpha=2, dropout=1.0)
    apply_lora(model, "q", r=2, alpha=2)
    with pytest.raises(LightftError, match="already has LoRA"):
        apply_lora(model, "v", r=2, alpha=2)


def test_inspect_reports_lora_share(hf_folder, capsys):
    import json

    from lightft.cli.main import main

    _, path = hf_folder("llama")
    main(["inspect", str(path), "--json", "--lora-r", "4", "--lora-targets", "q,v"])
    info = json.loads(capsys.readouterr().out)
    # per layer: q is 32 -> 32, v is 32 -> 32 (4 heads x 8): 2 x 4 x (32 + 32) = 512 parameters
    assert info["lora"]["trainable_parameters"] == info["layers"] * 512
    assert info["lora"]["layers"] == 2 * info["layers"]
    assert info["lora"]["trainable_share"].endswith("%")


def test_inspect_bad_lora_target_is_one_line_error(hf_folder, capsys):
    from lightft.cli.main import main

    _, path = hf_folder("gpt2")
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(path), "--lora-r", "8", "--lora-targets", "gate"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (earlier lines: other libraries' log noise)
    assert last.startswith("error: LoRA target 'gate' is not valid for the gpt2 family")


def test_merged_export_copies_tokenizer_files_and_keeps_model(hf_folder, tmp_path):
    from lightft.lora import save_merged

    _, path = hf_folder("llama")
    (path / "tokenizer.json").write_text('{"stand-in": true}', encoding="utf-8")
    model = load_model(path)
    apply_lora(model, "q,v", r=2, alpha=4)
    _randomise_b(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    save_merged(model, tmp_path / "merged")
    assert (tmp_path / "merged" / "tokenizer.json").read_text(encoding="utf-8") == '{"stand-in": true}'
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    reloaded = load_model(tmp_path / "merged")  # a plain model again: no LoRA keys in the file
    merge_lora(model)
    ids = torch.randint(3, 99, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_under_autocast_the_adapter_input_skips_the_fp32_round_trip():
    """Under bf16 autocast a bf16 input goes to the A matmul as it is: the same bits as casting it to the fp32
    factors' dtype first (autocast casts it straight back), without the two extra passes."""
    import torch.nn.functional as F

    from lightft.lora.layer import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(48, 40), r=4, alpha=8.0).bfloat16()
    layer.lora_A.data, layer.lora_B.data = torch.randn(4, 48), torch.randn(40, 4)  # fp32 factors, B non-zero
    x = torch.randn(3, 5, 48).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
        old = F.linear(x, layer.weight, layer.bias).add_(
            F.linear(F.linear(x.to(torch.float32), layer.lora_A), layer.lora_B).to(torch.bfloat16), alpha=layer.scaling)
        assert layer.to_factor_dtype(x) is x  # no copy under autocast
    assert got.dtype == torch.bfloat16 and torch.equal(got, old)
    assert layer.to_factor_dtype(x).dtype == torch.float32  # outside it: the factors' dtype, as before
