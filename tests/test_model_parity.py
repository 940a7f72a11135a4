"""lightft's transformer reproduces `transformers` outputs exactly (fp32) for each family and option."""

from __future__ import annotations

import pytest
import torch

from lightft import load_model

ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
}


def _batch(vocab: int = 99, B: int = 3, T: int = 17, pad_rows: bool = False):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if pad_rows:  # right padding of different lengths
        mask[1, 11:] = 0
        mask[2, 5:] = 0
    return ids, mask


def _compare_decoder(hf_model, path, pad_rows=False):
    ids, mask = _batch(pad_rows=pad_rows)
    ours = load_model(path)
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    keep = mask.bool()  # padded positions are undefined in both implementations
    torch.testing.assert_close(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pad_rows", [False, True])
def test_bert_hidden_states(hf_folder, pad_rows):
    hf_model, path = hf_folder("bert")
    ids, mask = _batch(pad_rows=pad_rows)
    types = torch.zeros_like(ids)
    types[:, 9:] = 1
    ours = load_model(path)
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    keep = mask.bool()
    torch.testing.assert_close(got.hidden_states[keep], expected.last_hidden_state[keep], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.pooled, expected.pooler_output, rtol=1e-4, atol=1e-4)


def test_roberta_positions(hf_folder):
    hf_model, path = hf_folder("roberta")
    ids, mask = _batch(pad_rows=True)
    ids = ids.masked_fill(mask == 0, 1)  # RoBERTa derives positions from pad tokens
    ours = load_model(path)
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask).hidden_states
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pad_rows", [False, True])
@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_logits(hf_folder, pad_rows, tied):
    hf_model, path = hf_folder("gpt2", tie_word_embeddings=tied)
    _compare_decoder(hf_model, path, pad_rows)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_key_value_heads": 2},  # grouped-query attention
        {"num_key_value_heads": 1, "tie_word_embeddings": True},
        {"attention_bias": True, "mlp_bias": True},
        {"head_dim": 16},
        *[{"rope_scaling": s} for s in ROPE_SCALINGS.values()],
    ],
    ids=["plain", "gqa", "mqa-tied", "bias", "head_dim", *ROPE_SCALINGS],
)
@pytest.mark.parametrize("pad_rows", [False, True])
def test_llama_logits(hf_folder, options, pad_rows):
    hf_model, path = hf_folder("llama", **options)
    _compare_decoder(hf_model, path, pad_rows)


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_llama_variants(hf_folder, family):
    hf_model, path = hf_folder(family, num_key_value_heads=2)
    _compare_decoder(hf_model, path, pad_rows=True)


def test_sharded_checkpoint(hf_folder):
    hf_model, path = hf_folder("llama", shard_size="20KB")
    assert (path / "model.safetensors.index.json").is_file()
    _compare_decoder(hf_model, path)


def test_explicit_position_ids_and_segments_match_separate_documents(hf_folder):
    """Two documents packed in one row with restarting positions == each document alone."""
    _, path = hf_folder("llama")
    model = load_model(path)
    a, b = torch.randint(3, 99, (1, 7)), torch.randint(3, 99, (1, 5))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    segments = torch.tensor([[0] * 7 + [1] * 5])
    with torch.no_grad():
        together = model(packed, position_ids=positions, segment_ids=segments).logits
        alone = torch.cat([model(a).logits, model(b).logits], dim=1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_load_in_dtype(hf_folder, dtype):
    _, path = hf_folder("llama")
    model = load_model(path, dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert model(torch.randint(3, 99, (1, 4))).logits.dtype == dtype


def test_kv_cache_matches_full_forward(hf_folder):
    from lightft.model import KVCache

    _, path = hf_folder("llama", num_key_value_heads=2)
    model = load_model(path)
    ids = torch.randint(3, 99, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(model.cfg, 2, 16, ids.device, torch.float32)
        first = model(ids[:, :6], cache=cache).logits
        steps = [model(ids[:, i : i + 1], cache=cache).logits for i in range(6, 10)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, rtol=1e-5, atol=1e-5)
