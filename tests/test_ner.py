"""NER: span extraction vs seqeval's semantics, CoNLL / JSONL reading, sub-word alignment, train/eval/predict."""

from __future__ import annotations

import json
import random

import pytest

from lightft.data.ner import NerDataModule, read_sentences, word_offsets
from lightft.errors import LightftError
from lightft.options import Options
from lightft.tasks.ner import EntityF1, entity_spans
from lightft.tokenizer import load_tokenizer
from supervised_utils import NER_SENTENCES, conll_text, run_cli, tiny_bert_dir, write_lines

# (tags, expected spans as (type, first, end-exclusive)) — written from seqeval's documented default mode
HAND_CASES = [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["I-PER", "I-PER", "O"], [("PER", 0, 2)]),                       # I- without B- begins a span
    (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),             # B- always begins a new span
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),    # a type change ends and begins
    (["O", "I-ORG", "B-ORG", "I-ORG"], [("ORG", 1, 2), ("ORG", 2, 4)]),
    (["O", "O"], []),
    (["B-MISC"], [("MISC", 0, 1)]),
]


@pytest.mark.parametrize("tags,expected", HAND_CASES)
def test_entity_spans_hand_cases(tags, expected):
    assert entity_spans(tags) == expected


def test_entity_spans_and_f1_match_seqeval_on_random_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    pool = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[rng.choice(pool) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(pool) for t in g] for g in gold]
    for seq in gold:
        assert entity_spans(seq) == [(k, a, b + 1) for k, a, b in get_entities(seq)]
    metric = EntityF1()
    metric.update(pred, gold)
    got = metric.compute()
    assert got["f1"].item() == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-6)
    assert got["precision"].item() == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-6)
    assert got["recall"].item() == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-6)


def test_entity_f1_by_hand():
    metric = EntityF1()
    metric.update([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    got = {k: v.item() for k, v in metric.compute().items()}
    assert got == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_conll_reading(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(conll_text(NER_SENTENCES[:2]) + "\n\n", encoding="utf-8")
    sents = read_sentences(str(path), None)
    assert [s[1] for s in sents] == [NER_SENTENCES[0][0], NER_SENTENCES[1][0]]
    assert [s[2] for s in sents] == [NER_SENTENCES[0][1], NER_SENTENCES[1][1]]
    assert sents[0][0] == 3 and sents[1][0] == 10  # first token line of each sentence


@pytest.mark.parametrize("text,message", [
    ("a NN O\nb NN B-PER\nc O\n", "a.txt:3: 2 columns, but earlier lines have 3"),
    ("a NN O\nb NN PER\n", "a.txt:2: tag 'PER' is not BIO"),
    ("\n\n", "a.txt: no sentences found"),
])
def test_conll_errors(tmp_path, text, message):
    path = tmp_path / "a.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LightftError, match=message):
        read_sentences(str(path), None)


def test_jsonl_tags_must_match_tokens(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "O"]},
                                              {"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(LightftError, match=r"a.jsonl:2: 'tags' must be a list of strings, one per token"):
        read_sentences(str(path), None)


def test_word_offsets():
    assert word_offsets(["John", "lives", "."]) == ("John lives .", [0, 5, 11], [4, 10, 12])


@pytest.mark.parametrize("label_all", [False, True])
def test_subword_alignment(tmp_path, label_all):
    model = tiny_bert_dir(tmp_path / "m")
    data = write_lines(tmp_path / "t.jsonl", [{"tokens": ["john", "zebra", "works"], "tags": ["B-PER", "I-PER", "O"]},
                                              {"tokens": ["paris", "acme"], "tags": ["B-LOC", "B-ORG"]}])
    opts = Options(cache=False, val_fraction=0.0, label_all_subwords=label_all)
    dm = NerDataModule(load_tokenizer(model), opts, train_file=str(data))
    dm.setup("fit")
    assert dm.label_names == ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
    batch = dm.collate(dm.datasets["train"])
    # [CLS] john z ##e ##b ##r ##a works [SEP]: "zebra" is 5 sub-words, all from word 1
    assert batch["word_ids"][0].tolist() == [-1, 0, 1, 1, 1, 1, 1, 2, -1]
    per, i_per, o = dm.label_to_id["B-PER"], dm.label_to_id["I-PER"], dm.label_to_id["O"]
    rest = [i_per] * 4 if label_all else [-100] * 4
    assert batch["labels"][0].tolist() == [-100, per, i_per, *rest, o, -100]
    assert batch["labels"][1].tolist()[4:] == [-100] * 5  # shorter sentence: padding is ignored


def test_unknown_tag_at_eval_names_file_and_line(tmp_path):
    model = tiny_bert_dir(tmp_path / "m")
    evalf = tmp_path / "e.txt"
    evalf.write_text(conll_text([(["john", "acme"], ["B-PER", "B-ORG"])]), encoding="utf-8")
    dm = NerDataModule(load_tokenizer(model), Options(cache=False), eval_file=str(evalf),
                       label_names=["O", "B-PER", "I-PER"])
    with pytest.raises(LightftError, match=r"e.txt:4: tag 'B-ORG' was not seen in training"):
        dm.setup("test")


def test_train_eval_predict_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model = tiny_bert_dir(tmp_path / "m")
    train = tmp_path / "train.txt"
    train.write_text(conll_text(NER_SENTENCES * 2), encoding="utf-8")
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "ner", "--model", model, "--train", train, "--val", train, "--out", run,
                              "--full", "--epochs", "1", "--batch-size", "4", "--no-progress", "--lr", "1e-3"], capsys)
    assert code == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["task_state"]["label_names"] == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert set(json.loads(out.strip().splitlines()[-1])) >= {"val_f1", "val_precision", "val_recall"}
    code, out, err = run_cli(["eval", "ner", "--model", run, "--data", train, "--no-progress"], capsys)
    assert code == 0, err
    assert 0.0 <= json.loads(out)["f1"] <= 1.0
    jsonl = write_lines(tmp_path / "p.jsonl", [{"tokens": ["john", "smith", "lives", "in", "paris"]}])
    code, out, err = run_cli(["predict", "ner", "--model", run, "--data", jsonl], capsys)
    assert code == 0, err
    rec = json.loads(out)
    assert rec["text"] == "john smith lives in paris" and len(rec["tags"]) == 5
    for ent in rec["entities"]:  # character offsets into the space-joined sentence
        assert rec["text"][ent["start"]:ent["end"]] == ent["text"]
