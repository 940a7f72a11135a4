"""--pad-to-multiple: batch lengths rounded up (bounded by --max-length) with padding exactly like the
collate's own, so losses do not change; on by default with --compile; a bad value is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch

from lightft import LightftError, load_model, load_tokenizer
from lightft.data.base import TaskDataModule
from lightft.data.classify import ClassificationDataModule
from lightft.data.instruct import InstructDataModule
from lightft.data.lm import LMDataModule
from lightft.kernels import use_kernels
from lightft.options import Options
from lightft.tasks.causal_lm import InstructModule
from lightft.tasks.classify import ClassificationModule
from supervised_utils import SENTIMENT, run_cli, tiny_bert_dir, write_lines
from tiny_decoder import tiny_decoder

RECORDS = [{"instruction": "Say yes", "input": "", "output": "yes"},
           {"instruction": "Add", "input": "1 and 2", "output": "3"},
           {"instruction": "Name a colour", "input": "", "output": "blue, or maybe red"}]


def test_default_is_64_with_compile_else_off():
    assert Options().resolved_pad_multiple() == 1
    assert Options(compile=True).resolved_pad_multiple() == 64
    assert Options(compile=True, pad_to_multiple=0).resolved_pad_multiple() == 1
    assert Options(pad_to_multiple=8).resolved_pad_multiple() == 8


def first_batch(dm: TaskDataModule, train: bool = True) -> dict:
    split = "train" if train else "val"
    return dm.collate_fn(train)(dm.datasets[split][:4])


def classify_loss(tmp_path, multiple: int) -> tuple[torch.Tensor, dict]:
    folder = tiny_bert_dir(tmp_path / "m")
    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    opts = Options(cache=False, val_fraction=0.0, max_length=64, pad_to_multiple=multiple, classifier_dropout=0.0,
                   pooling="mean")  # mean pooling: pads would show if they were not masked
    dm = ClassificationDataModule(load_tokenizer(folder), opts, train_file=str(data))
    dm.setup("fit")
    torch.manual_seed(0)
    module = ClassificationModule(load_model(folder), opts, **dm.task_args()).eval()
    torch.nn.init.normal_(module.head.out.weight, std=1.0)  # logits far from 0: a loss far from ln 2
    batch = first_batch(dm)
    return module.loss(batch, module(batch)), batch


def instruct_loss(tmp_path, multiple: int) -> tuple[torch.Tensor, dict]:
    folder = tiny_decoder(tmp_path, "gpt2")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    opts = Options(cache=False, val_fraction=0.0, max_length=128, pad_to_multiple=multiple, lora=False,
                   template="Q: {instruction} {input}\nA: ")
    dm = InstructDataModule(load_tokenizer(folder), opts, train_file=str(data))
    dm.setup("fit")
    module = InstructModule(load_model(folder), opts).eval()
    batch = first_batch(dm)
    return module.loss(batch, module(batch)), batch


@pytest.mark.parametrize("task_loss", [classify_loss, instruct_loss])
def test_loss_is_unchanged_by_padding_to_a_multiple(tmp_path, task_loss):
    with torch.no_grad():
        plain, plain_batch = task_loss(tmp_path / "a", 0)
        padded, batch = task_loss(tmp_path / "b", 64)
    T = plain_batch["input_ids"].shape[1]
    assert T % 64 and batch["input_ids"].shape[1] == 64  # the padding really happened
    assert (batch["attention_mask"][:, T:] == 0).all()
    if "labels" in batch and batch["labels"].dim() == 2:
        assert (batch["labels"][:, T:] == -100).all()
    torch.testing.assert_close(padded, plain, rtol=1e-6, atol=1e-6)
    print(f"{task_loss.__name__}: width {T} -> 64, loss {plain.item():.8f} vs {padded.item():.8f}")


def test_right_padding_keeps_the_decoder_mask_free(tmp_path):
    with torch.no_grad():
        _, batch = instruct_loss(tmp_path, 64)
    model = use_kernels(load_model(tiny_decoder(tmp_path / "m", "gpt2")))  # the mask-free path is a kernel
    T = batch["input_ids"].shape[1]
    assert model.build_mask(batch["attention_mask"], batch.get("segment_ids"), T, T, torch.device("cpu")) is None


def test_every_per_token_key_gets_its_own_pad_value_and_max_length_bounds_it(tmp_path):
    dm = TaskDataModule(load_tokenizer(tiny_bert_dir(tmp_path / "m")), Options(pad_to_multiple=8, max_length=12))
    ones = torch.ones(2, 5, dtype=torch.long)
    batch = {"input_ids": ones, "attention_mask": ones, "token_type_ids": ones, "labels": ones, "word_ids": ones,
             "start_positions": torch.tensor([1, 2]), "context": ["a", "b"]}
    out = dm.pad_to_multiple(batch)
    assert out["input_ids"].shape == (2, 8)
    pads = {k: out[k][0, 5:].unique().tolist() for k in ("input_ids", "attention_mask", "token_type_ids", "labels",
                                                          "word_ids")}
    assert pads == {"input_ids": [dm.input_pad_id()], "attention_mask": [0], "token_type_ids": [0],
                    "labels": [-100], "word_ids": [-1]}
    assert out["start_positions"] is batch["start_positions"] and out["context"] == ["a", "b"]
    wide = {"input_ids": torch.ones(2, 10, dtype=torch.long)}
    assert dm.pad_to_multiple(wide)["input_ids"].shape == (2, 12)  # 16 would pass --max-length 12


def test_full_packed_lm_rows_are_not_padded(tmp_path):
    folder = tiny_decoder(tmp_path, "gpt2")
    data = tmp_path / "docs.txt"
    data.write_text("A long enough document that fills more than one packed row of forty-eight tokens. " * 3,
                    encoding="utf-8")
    dm = LMDataModule(load_tokenizer(folder), Options(cache=False, val_fraction=0.0, max_length=48,
                                                       pad_to_multiple=64), train_file=str(data))
    dm.setup("fit")
    assert len(dm.datasets["train"][0]["input_ids"]) == 48
    assert first_batch(dm)["input_ids"].shape[1] == 48


def test_negative_multiple_is_an_error(tmp_path, capsys):
    with pytest.raises(LightftError, match="--pad-to-multiple"):
        TaskDataModule(load_tokenizer(tiny_bert_dir(tmp_path / "m")), Options(pad_to_multiple=-1))
    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    code, out, err = run_cli(["train", "classify", "--model", tmp_path / "m", "--train", data, "--out",
                              tmp_path / "run", "--pad-to-multiple", "-1"], capsys)
    assert code == 2 and "--pad-to-multiple must be 0 (off) or a positive" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
