"""NF4 (lightft/quant) and QLoRA: levels and codes against bitsandbytes, error bounds, QLoRA == LoRA on the
dequantised base, gradients, nothing dequantised kept for backward, training / export end to end. The QLoRA
tests run for both 4-bit schemes (nf4, q4_1); Q4_1's own format checks are in tests/test_q4_1.py."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lightft import load_model
from lightft.cli.main import cli
from lightft.lora import apply_lora, lora_layers, merge_lora, merged_state_dict, unmerge_lora
from lightft.quant import (NF4Weight, QuantLinear, dequantize_linears, is_quantized, nf4_bits_per_weight, nf4_levels,
                           quantize_linears, quantize_on_load, quantized_bytes)
from lightft.quant.nf4 import max_abs_error_bound, quantize_blocks
from tests.conftest import save_hf, tiny_hf_model
from tiny_decoder import SIMPLE_CHAT, tiny_decoder, tiny_llama

SCHEMES = pytest.mark.parametrize("scheme", ["nf4", "q4_1"])
FAST = ["--max-steps", "2", "--batch-size", "4", "--no-progress", "--no-cache", "--lr", "1e-3", "--max-length", "64"]


def _normal(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- levels and codes
def test_levels_are_rescaled_normal_quantiles():
    levels = nf4_levels(torch.float64)
    assert levels.shape == (16,) and levels[0] == -1 and levels[-1] == 1 and (levels == 0).sum() == 1
    assert (levels[1:] > levels[:-1]).all() and (levels < 0).sum() == 7 and (levels > 0).sum() == 8
    # the positive half: quantiles of N(0, 1) at 8 evenly spaced probabilities from 0.9677 down to 0.5 (excl.)
    scipy_stats = pytest.importorskip("scipy.stats")
    probs = torch.linspace(0.9677083, 0.5, 9, dtype=torch.float64)[:-1]
    q = torch.tensor(scipy_stats.norm.ppf(probs.numpy()))
    torch.testing.assert_close(levels[8:].flip(0), q / q[0], rtol=0, atol=1e-6)


def test_levels_and_codes_match_bitsandbytes():
    bnb = pytest.importorskip("bitsandbytes.functional")
    torch.testing.assert_close(nf4_levels(), bnb.get_4bit_type("nf4", device="cpu"), rtol=0, atol=1e-6)
    w = _normal(384, 256) * 0.05
    theirs, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")
    codes, absmax = quantize_blocks(w)
    torch.testing.assert_close(absmax, state.absmax, rtol=0, atol=0)
    # same packing (even index in the high nibble); a value within float rounding of a midpoint between two
    # levels may go either way, so allow a handful of bytes to differ by one level in one nibble
    differ = codes != theirs.view(-1)
    assert differ.float().mean() < 1e-3
    for a, b in zip(codes[differ].tolist(), theirs.view(-1)[differ].tolist()):
        assert {abs((a >> 4) - (b >> 4)), abs((a & 15) - (b & 15))} <= {0, 1}
    ours = NF4Weight(w, double_quant=False).dequantize()
    torch.testing.assert_close(ours.view(-1, 2)[~differ], bnb.dequantize_4bit(theirs, state).view(-1, 2)[~differ],
                               rtol=0, atol=1e-7)


def test_double_quantised_scales_close_to_bitsandbytes():
    bnb = pytest.importorskip("bitsandbytes.functional")
    w = _normal(512, 192, seed=1)
    theirs, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    ref = bnb.dequantize_4bit(theirs, state)
    ours = NF4Weight(w, double_quant=True).dequantize()
    # both round each block scale to 8 bits (bnb: dynamic-tree float code; ours: int8 absmax): ~0.5 % of a scale
    assert (ours - ref).abs().max() < 0.01 * w.abs().max()
    assert abs((ours - w).pow(2).mean().sqrt() - (ref - w).pow(2).mean().sqrt()) < 0.002


# --------------------------------------------------------------------------------- error and size
@pytest.mark.parametrize("double_quant", [False, True])
def test_round_trip_error_bounds(double_quant):
    w = _normal(300, 70, seed=2) * 0.02  # 21,000 values: not a multiple of 64, so the last block is padded
    q = NF4Weight(w, double_quant=double_quant)
    back = q.dequantize()
    assert back.shape == w.shape and back.dtype == w.dtype
    blocks = torch.nn.functional.pad(w.reshape(-1), (0, (-w.numel()) % 64)).view(-1, 64)
    err = torch.nn.functional.pad((back - w).reshape(-1), (0, (-w.numel()) % 64)).view(-1, 64).abs().amax(1)
    bound = max_abs_error_bound(blocks.abs().amax(1))  # nearest-level rounding: half the widest gap x absmax
    slack = 1e-7 if not double_quant else 0.01 * blocks.abs().amax()  # + the 8-bit rounding of the scales
    assert (err <= bound + slack).all()
    rel_rms = float((back - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt())
    assert 0.05 < rel_rms < 0.12  # ~0.09 for normal weights: what 16 levels can do
    w[0, :5] = 0.0
    assert (NF4Weight(w, double_quant=double_quant).dequantize()[0, :5] == 0).all()  # 0 is a level: exact


def test_two_codes_per_byte_and_bits_per_weight():
    w = _normal(1024, 512)
    plain, double = NF4Weight(w, double_quant=False), NF4Weight(w, double_quant=True)
    assert plain.codes.dtype == torch.uint8 and plain.codes.numel() == w.numel() // 2
    assert 8 * plain.nbytes() / w.numel() == pytest.approx(nf4_bits_per_weight(False)) == 4.5
    assert 8 * double.nbytes() / w.numel() == pytest.approx(nf4_bits_per_weight(True), abs=1e-3)
    assert nf4_bits_per_weight(True) < 4.13
    codes = plain.codes.long()
    unpacked = torch.stack([codes >> 4, codes & 15], -1).view(-1)  # even index in the high nibble
    torch.testing.assert_close(nf4_levels()[unpacked].view(-1, 64) * plain.scales()[:, None], plain.dequantize().view(-1, 64))


def test_scales_survive_a_model_wide_bf16_cast():
    linear = torch.nn.Linear(128, 64)
    layer = QuantLinear(NF4Weight(linear.weight), linear.bias)
    before = layer.qweight.scales().clone()
    layer.to(torch.bfloat16)  # what Lightning's bf16-true does to the whole module
    assert torch.equal(layer.qweight.scales(), before)


# ------------------------------------------------------------------------------------------ QLoRA
def _pair(targets="all-linear", scheme="nf4"):
    """(QLoRA model, plain LoRA model on the dequantised base) with the same random A / B."""
    q = tiny_llama()
    assert quantize_linears(q, scheme) == 14 and is_quantized(q)
    ref = tiny_llama()
    ref.load_state_dict(merged_state_dict(q))  # the dequantised base in plain nn.Linear layers
    apply_lora(q, targets, r=4, alpha=8)
    apply_lora(ref, targets, r=4, alpha=8)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for (_, a), (_, b) in zip(lora_layers(q), lora_layers(ref)):
            a.lora_A.copy_(torch.randn(a.lora_A.shape, generator=g))
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.1)
            b.lora_A.copy_(a.lora_A)
            b.lora_B.copy_(a.lora_B)
    return q, ref


@SCHEMES
def test_qlora_forward_and_gradients_equal_lora_on_the_dequantised_base(scheme):
    q, ref = _pair(scheme=scheme)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    out_q, out_ref = q(ids).logits, ref(ids).logits
    torch.testing.assert_close(out_q, out_ref, rtol=0, atol=1e-6)
    out_q.square().mean().backward()
    out_ref.square().mean().backward()
    for (name, a), (_, b) in zip(lora_layers(q), lora_layers(ref)):
        torch.testing.assert_close(a.lora_A.grad, b.lora_A.grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(a.lora_B.grad, b.lora_B.grad, rtol=1e-5, atol=1e-7, msg=name)
    with_grad = {n for n, p in q.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith(("lora_A", "lora_B")) for n in with_grad)
    assert all(not b.requires_grad for b in q.buffers())


@SCHEMES
def test_nothing_dequantised_is_saved_for_backward(scheme):
    q, _ = _pair("q,v", scheme)
    shapes = {tuple(m.qweight.shape) for m in q.modules() if getattr(m, "qweight", None) is not None}
    shapes |= {s[::-1] for s in shapes}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        loss = q(torch.randint(0, 50, (2, 9))).logits.sum()
    loss.backward()
    assert saved and not (set(saved) & shapes), "a dequantised weight was kept for the backward pass"


@SCHEMES
def test_merge_unmerge_and_full_precision_export(scheme):
    q, ref = _pair(scheme=scheme)
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        before = q(ids).logits
        merge_lora(q)
        torch.testing.assert_close(q(ids).logits, before, rtol=0, atol=1e-5)
        assert all(layer.weight is not None and layer.weight.dtype == torch.float32 for _, layer in lora_layers(q))
        unmerge_lora(q)
        assert all(layer.weight is None for _, layer in lora_layers(q))
        torch.testing.assert_close(q(ids).logits, before, rtol=0, atol=0)
        merge_lora(ref)
        state = merged_state_dict(q)  # dequantised W + ΔW under plain names, no 4-bit buffers
    assert not any("qweight" in k or "lora_" in k for k in state)
    plain = {k: v for k, v in ref.state_dict().items() if "lora_" not in k}
    assert state.keys() == plain.keys()
    for name, tensor in plain.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=1e-6)


@SCHEMES
def test_quantize_on_load_equals_quantize_after_load(tmp_path, scheme):
    path = save_hf(tiny_hf_model("llama", num_key_value_heads=2, attention_bias=True), tmp_path / "m")
    during = load_model(path, take=quantize_on_load(scheme))
    after = load_model(path)
    quantize_linears(after, scheme)
    a, b = dict(during.named_buffers()), dict(after.named_buffers())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert during.layers[0].attn.q_proj.bias is not None  # biases still loaded into the 4-bit layers
    torch.testing.assert_close(during.layers[0].attn.q_proj.bias, after.layers[0].attn.q_proj.bias)
    held, full = quantized_bytes(during)
    assert held / full < 0.3  # 4.127 (nf4) or 5 (q4_1) bits / 32 for an fp32 base
    assert dequantize_linears(during) == 14 and not is_quantized(during)


@SCHEMES
def test_qlora_training_cli_eval_export(tmp_path, scheme):
    model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 6]))
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "instruct", "--model", str(model), "--train", str(data), "--out",
                              str(tmp_path / "run"), "--quantize", scheme, *FAST, "--precision", "32-true"],
                       catch_exceptions=False)  # fp32: the merged export gives the run's logits to 1e-5
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["options"]["quantize"] == scheme
    res = runner.invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    from lightft.runs import load_run

    run = load_run(str(tmp_path / "run"))
    assert is_quantized(run.backbone)
    merged = load_model(tmp_path / "merged")  # full precision: dequantised base + ΔW
    ids = torch.randint(3, 60, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, run.backbone.eval()(ids).logits, rtol=1e-5, atol=1e-5)


def test_nf4_with_full_is_refused(tmp_path, capsys):
    from lightft.cli.main import main

    model = tiny_decoder(tmp_path, "llama")
    data = tmp_path / "t.txt"
    data.write_text("some text\n" * 20)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", "lm", "--model", str(model), "--train", str(data), "--out", str(tmp_path / "run"), "--full",
              "--quantize", "nf4", *FAST])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err == "error: --quantize has no effect with --full (it sets up LoRA); drop it, or train with --lora\n"
    assert not (tmp_path / "run").exists()
