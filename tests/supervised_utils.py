"""Helpers for the supervised-task tests: a tiny BERT folder with a real WordPiece tokenizer, CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import save_hf, tiny_hf_model

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["good", "bad", "great", "awful", "film", "food", "the", "was", "is", "not", "very", "john", "smith",
         "paris", "acme", "corp", "lives", "in", "works", "at", "and", "it", "."]


def tiny_tokenizer_files(folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json for a lower-casing WordPiece vocabulary of a few words + letters."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS + letters + ["##" + c for c in letters])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]"}), encoding="utf-8")


def tiny_bert_dir(path: Path) -> Path:
    """A 2-layer random BERT (vocab 120) with the tokenizer above: fast enough for CLI tests."""
    save_hf(tiny_hf_model("bert", vocab_size=120), path)
    tiny_tokenizer_files(path)
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lightft ARGS` run in-process."""
    from lightft.cli.main import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_lines(path: Path, rows: list) -> Path:
    """JSONL from dicts, or raw text lines from strings."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


SENTIMENT = [("the film was very good", "pos"), ("the food was awful", "neg"), ("it is great", "pos"),
             ("it was not good", "neg"), ("the food is great and good", "pos"), ("the film is bad", "neg"),
             ("very great film", "pos"), ("awful food", "neg")]

NER_SENTENCES = [
    (["john", "smith", "lives", "in", "paris", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["john", "works", "at", "acme", "corp", "."], ["B-PER", "O", "O", "B-ORG", "I-ORG", "O"]),
    (["paris", "is", "good", "."], ["B-LOC", "O", "O", "O"]),
    (["smith", "works", "at", "acme", "in", "paris"], ["B-PER", "O", "O", "B-ORG", "O", "B-LOC"]),
]


def conll_text(sentences: list[tuple[list[str], list[str]]]) -> str:
    blocks = ["-DOCSTART- -X- -X- O\n"]
    for words, tags in sentences:
        blocks.append("".join(f"{w} NN O {t}\n" for w, t in zip(words, tags)))
    return "\n".join(blocks)
