"""Sequence classification: pairs, pooling (encoders and a decoder), -100 masking, gradient accumulation, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lightft.checkpoint import load_model
from lightft.data.base import attention_mask_for, pad_sequences
from lightft.data.classify import ClassificationDataModule
from lightft.errors import LightftError
from lightft.options import Options
from lightft.tasks.classify import ClassificationModule
from lightft.tokenizer import load_tokenizer
from supervised_utils import SENTIMENT, run_cli, tiny_bert_dir, write_lines


def make_batch(seqs: list[list[int]], labels: list[int], pad: int = 0) -> dict:
    ids = pad_sequences(seqs, pad)
    return {"input_ids": ids, "attention_mask": attention_mask_for(seqs, ids.shape[1]),
            "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor(labels)}


def random_seqs(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (int(torch.randint(3, 11, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def classifier(folder, pooling: str = "auto", n: int = 3) -> ClassificationModule:
    backbone = load_model(folder)
    for p in backbone.parameters():
        p.requires_grad_(True)
    torch.manual_seed(0)
    module = ClassificationModule(backbone, Options(pooling=pooling, classifier_dropout=0.0),
                                  label_names=[str(i) for i in range(n)])
    return module.eval()  # dropout off: the comparisons below must be exact up to float error


def test_gradient_accumulation_matches_one_big_batch(hf_folder):
    """8 x 1 and 2 x 4 (loss / 4 per micro-batch, as Lightning scales it) give the same loss and gradients."""
    _, folder = hf_folder("bert")
    module = classifier(folder)
    seqs, labels = random_seqs(8, 99), [0, 1, 2, 1, 0, 2, 2, 1]
    big = make_batch(seqs, labels)
    loss_big = module.loss(big, module(big))
    loss_big.backward()
    grads_big = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    total = 0.0
    for i in range(0, 8, 2):
        small = make_batch(seqs[i:i + 2], labels[i:i + 2])
        loss = module.loss(small, module(small)) / 4
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(loss_big.item(), abs=1e-6)
    assert len(grads_big) > 10
    for name, g in grads_big.items():
        torch.testing.assert_close(dict(module.named_parameters())[name].grad, g, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("family,pooling,expected", [("bert", "auto", "pooler"), ("bert", "cls", "cls"),
                                                     ("bert", "mean", "mean"), ("llama", "auto", "last"),
                                                     ("gpt2", "auto", "last")])
def test_padding_does_not_change_logits(hf_folder, family, pooling, expected):
    """A sequence gets the same logits alone and right-padded beside a longer one (decoders: last real token)."""
    _, folder = hf_folder(family)
    module = classifier(folder, pooling)
    assert module.pooling == expected
    short, long = [7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]
    with torch.no_grad():
        alone = module(make_batch([short], [0]))["logits"]
        padded = module(make_batch([short, long], [0, 1], pad=3))["logits"]
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)


def test_llama_classifier_learns(hf_folder):
    """A tiny decoder used as a classifier fits 4 examples (last-token pooling carries the signal)."""
    _, folder = hf_folder("llama")
    module = classifier(folder, n=2)
    batch = make_batch([[5, 6, 7], [8, 9], [5, 6, 7, 20], [8, 9, 30, 31]], [0, 1, 0, 1])
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
    first = module.loss(batch, module(batch)).item()
    for _ in range(30):
        opt.zero_grad()
        loss = module.loss(batch, module(batch))
        loss.backward()
        opt.step()
    assert loss.item() < first / 4


def datamodule(tmp_path, train=None, eval_file=None, label_names=None, **opts) -> ClassificationDataModule:
    tok = load_tokenizer(tiny_bert_dir(tmp_path / "m"))
    dm = ClassificationDataModule(tok, Options(cache=False, val_fraction=0.0, **opts), train_file=train,
                                  eval_file=eval_file, label_names=label_names)
    return dm


def test_text_pairs_glue_tsv_and_pair_column(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("sentence1\tsentence2\tlabel\nthe film\twas good\t1\nthe food\twas bad\t0\n", encoding="utf-8")
    dm = datamodule(tmp_path, train=str(tsv))
    dm.setup("fit")
    batch = dm.collate(dm.datasets["train"])
    # [CLS] the film [SEP] was good [SEP]: segment 1 starts after the first [SEP]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert dm.label_names == ["0", "1"]
    jsonl = write_lines(tmp_path / "p.jsonl", [{"a": "good", "b": "film", "y": "pos"},
                                               {"a": "bad", "b": "food", "y": "neg"}])
    dm = datamodule(tmp_path, train=str(jsonl), text_column="a", pair_column="b", label_column="y")
    dm.setup("fit")
    assert dm.collate(dm.datasets["train"])["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1]


def test_unlabelled_rows_are_masked_with_minus_100(tmp_path):
    data = write_lines(tmp_path / "e.jsonl", [{"text": "good film", "label": "pos"}, {"text": "bad food"}])
    dm = datamodule(tmp_path, eval_file=str(data), label_names=["neg", "pos"])
    dm.setup("predict")
    assert dm.collate(dm.datasets["eval"])["labels"].tolist() == [1, -100]


def test_empty_training_label_is_an_error(tmp_path):
    data = write_lines(tmp_path / "t.jsonl", [{"text": "good film", "label": "pos"}, {"text": "bad", "label": ""}])
    with pytest.raises(LightftError, match=r"t.jsonl:2: empty label"):
        datamodule(tmp_path, train=str(data)).setup("fit")


def test_eval_without_any_label_is_an_error(tmp_path):
    data = write_lines(tmp_path / "e.jsonl", [{"text": "good film", "sentiment": "pos"}])
    dm = datamodule(tmp_path, eval_file=str(data), label_names=["neg", "pos"])
    with pytest.raises(LightftError, match=r"e.jsonl: no record has a 'label' field"):
        dm.setup("test")


@pytest.mark.parametrize("mode", ["--full", "--lora"])
def test_train_eval_predict_cli(tmp_path, capsys, monkeypatch, mode):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model = tiny_bert_dir(tmp_path / "m")
    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out", run,
                              mode, "--epochs", "1", "--batch-size", "4", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["task_state"]["label_names"] == ["neg", "pos"]
    assert (run / "metrics.json").is_file()
    weights = load_file(str(run / "weights.safetensors"))
    if mode == "--lora":  # only adapters and the head are stored
        assert weights and all("lora_" in k or k.startswith("head.") for k in weights)
    code, out, err = run_cli(["eval", "classify", "--model", run, "--data", data, "--no-progress"], capsys)
    assert code == 0, err
    assert set(json.loads(out)) >= {"accuracy", "macro_f1", "loss"}
    code, out, err = run_cli(["predict", "classify", "--model", run, "--data", data], capsys)
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == len(SENTIMENT) and recs[0]["label"] in ("neg", "pos")
    assert sum(recs[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
