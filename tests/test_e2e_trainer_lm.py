"""benchmarks/e2e_trainer.py's continued-pretraining side (task lm): the causal-LM guide's blocks hold every token of
every document once, in order, each document closed with EOS, and the collator keeps EOS as a label although the
pad token is EOS (the guide's DataCollatorForLanguageModeling would mask it), so the medical comparison in
benchmarks/end_to_end.py trains the Trainer on the same tokens as lightft (fast)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def eos_padded_tokenizer():
    """A word-level tokenizer whose pad token is its EOS token (as SmolLM2's is in the Trainer script)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "the", "heart", "pumps", "blood", "cells", "divide"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    tok.pad_token = tok.eos_token
    return tok


def test_blocks_cover_the_document_stream_and_keep_eos_labels(trainer_script, eos_padded_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = eos_padded_tokenizer
    rows = [{"text": "the heart pumps blood"}, {"text": "cells divide"}, {"text": "the cells"}]
    blocks = trainer_script.lm_blocks({"max_length": 4}, tok, rows)
    stream = [2, 3, 4, 5, 1, 6, 7, 1, 2, 6, 1]  # each document's ids, then EOS (id 1)
    assert [len(b["input_ids"]) for b in blocks] == [4, 4, 3]  # full blocks, the last one partial and kept
    assert [t for b in blocks for t in b["input_ids"]] == stream
    assert all(b["labels"] == b["input_ids"] for b in blocks)

    cfg = transformers.LlamaConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=32, max_position_embeddings=16)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    spec = {"task": "lm", "model": str(tmp_path / "tiny"), "lora": False}
    _, collator = trainer_script.model_and_collator(spec, tok, [], torch.float32)
    batch = collator(blocks)
    assert batch["input_ids"].shape == (3, 4)  # [blocks, max_length]: only the last block padded
    assert batch["labels"][2].tolist() == [2, 6, 1, -100]  # its EOS label kept, its padding ignored
    assert batch["labels"][0].tolist() == [2, 3, 4, 5] and batch["labels"][1].tolist() == [1, 6, 7, 1]
    assert batch["attention_mask"].sum() == len(stream)  # the Trainer's non-padding token count
