"""Masked-LM pretraining: BERT's 80/10/10 masking, whole words, reproducible dynamic masks, head parity."""

from __future__ import annotations

import pytest
import torch

from conftest import minilm_dir, tiny_hf_model
from lightft.checkpoint import load_model
from lightft.data.mlm import MLMDataModule, choose_positions, mask_block
from lightft.options import Options
from lightft.tasks.mlm import MLMModule
from lightft.tokenizer import load_tokenizer

MASK, VOCAB, SPECIAL = 4, 5000, {1, 2}


def test_masking_proportions_and_specials():
    ids = [1] + list(range(1000, 2000)) + [2]
    counts = {"mask": 0, "random": 0, "kept": 0}
    for seed in range(20):
        inputs, labels = mask_block(ids, None, SPECIAL, MASK, VOCAB, 0.15, torch.Generator().manual_seed(seed))
        picked = [i for i, y in enumerate(labels) if y != -100]
        assert len(picked) == 150  # exactly 15 % of the 1000 non-special tokens
        assert 0 not in picked and len(ids) - 1 not in picked  # [CLS] / [SEP] never chosen
        assert all(labels[i] == ids[i] for i in picked)
        assert all(inputs[i] == ids[i] for i in range(len(ids)) if labels[i] == -100)
        for i in picked:
            counts["mask" if inputs[i] == MASK else "kept" if inputs[i] == ids[i] else "random"] += 1
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.03
    assert abs(counts["random"] / total - 0.1) < 0.025 and abs(counts["kept"] / total - 0.1) < 0.025


def test_whole_word_masking_takes_all_pieces():
    word_ids = [-1] + [i // 3 for i in range(300)] + [-1]  # 100 words of 3 pieces each
    candidates = list(range(1, 301))
    for seed in range(5):
        chosen = choose_positions(candidates, word_ids, 0.15, torch.Generator().manual_seed(seed))
        words = {word_ids[p] for p in chosen}
        assert len(chosen) == 45 and sorted(chosen) == sorted(p for p in candidates if word_ids[p] in words)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlm") / "docs.txt"
    path.write_text("\n".join(f"Patient {i} received aspirin and recovered after surgery in hospital." for i in range(12)),
                    encoding="utf-8")
    return str(path)


def test_dynamic_masks_are_seeded_and_validation_masks_fixed(text_file):
    tok = load_tokenizer(minilm_dir())

    def data(seed):
        dm = MLMDataModule(tok, Options(cache=False, seed=seed, whole_word_mask=True), train_file=text_file)
        dm.setup("fit")
        return dm, dm.datasets["train"]

    dm, train = data(1)
    first, second = dm.collate(train), dm.collate(train)
    assert not torch.equal(first["labels"], second["labels"])  # a new draw each time (dynamic)
    again = data(1)[0].collate(train)
    assert torch.equal(first["input_ids"], again["input_ids"])  # the same seed gives the same masks
    assert torch.equal(dm.eval_collate(train)["input_ids"], dm.eval_collate(train)["input_ids"])
    assert (first["labels"] != -100).sum() >= len(train)
    assert (first["labels"][first["attention_mask"] == 0] == -100).all()


def test_mlm_head_from_checkpoint_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    hf = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        hf.cls.predictions.bias.normal_()
    hf.save_pretrained(tmp_path / "mlm")
    module = MLMModule(load_model(tmp_path / "mlm"), Options(), model_dir=str(tmp_path / "mlm")).eval()
    assert module.task_args["pretrained_head"] is True
    ids = torch.randint(5, 99, (2, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7], labels[1, 0] = 11, 12, 13
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        ours = module(batch)["logits"]
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[labels != -100]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_mlm_head_without_checkpoint_head_is_fresh_and_tied(tmp_path):
    model = tiny_hf_model("bert")
    model.save_pretrained(tmp_path / "enc")
    module = MLMModule(load_model(tmp_path / "enc"), Options(), model_dir=str(tmp_path / "enc"))
    assert module.task_args["pretrained_head"] is False
    assert not any("decoder" in n for n, _ in module.head.named_parameters())  # decoder = embeddings
    hidden = torch.randn(3, 32)
    expected = module.head.norm(module.head.act(module.head.dense(hidden))) @ module.backbone.embed_tokens.weight.t()
    torch.testing.assert_close(module.head(hidden, module.backbone.embed_tokens.weight), expected + module.head.bias)
