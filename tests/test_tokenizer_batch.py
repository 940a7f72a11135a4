"""Tokenizer.encode_batch: padded input_ids + attention_mask that a model reads as it reads each text alone."""

from __future__ import annotations

import pytest
import torch

from lightft import LightftError, load_model, load_tokenizer
from tests.tiny_run import make_tiny_model


def test_right_padded_batch_gives_each_text_its_own_outputs(tmp_path):
    folder = make_tiny_model(tmp_path / "bert")
    tok, model = load_tokenizer(folder), load_model(folder)
    texts = ["good movie", "the plot was very boring and not fun", "fine"]
    ids, mask = tok.encode_batch(texts)
    assert ids.shape == mask.shape == (3, len(tok.encode(texts[1])))
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).hidden_states
        for i, text in enumerate(texts):
            alone = torch.tensor([tok.encode(text)])
            n = alone.shape[1]
            assert ids[i, :n].tolist() == alone[0].tolist() and mask[i].sum() == n
            assert (ids[i, n:] == tok.pad_id).all()
            torch.testing.assert_close(batch[i, :n], model(alone).hidden_states[0], rtol=1e-5, atol=1e-5)


def test_left_padding_for_decoders_and_equal_lengths_without_pad(tmp_path):
    from tiny_decoder import tiny_decoder

    folder = tiny_decoder(tmp_path, "llama")
    tok, model = load_tokenizer(folder), load_model(folder)
    texts = ["Hi", "Hello there"]
    ids, mask = tok.encode_batch(texts, padding_side="left")
    assert mask[0].tolist() == [0] * (ids.shape[1] - len(tok.encode("Hi"))) + [1] * len(tok.encode("Hi"))
    with torch.no_grad():
        last = model(ids, attention_mask=mask).logits[:, -1]
        for i, text in enumerate(texts):
            alone = model(torch.tensor([tok.encode(text)])).logits[0, -1]
            torch.testing.assert_close(last[i], alone, rtol=1e-4, atol=1e-4)
    same, _ = tok.encode_batch(["ab", "cd"], pad=False)
    assert same.shape[0] == 2
    with pytest.raises(LightftError, match="pass pad=True"):
        tok.encode_batch(texts, pad=False)
