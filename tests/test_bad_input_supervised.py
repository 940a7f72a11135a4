"""Bad data for classify / ner through the CLI: one `error:` line naming the file (and line), exit 2, no traceback,
and no half-written run folder or metrics file left behind."""

from __future__ import annotations

import pytest

from lightft.cli.main import main
from supervised_utils import NER_SENTENCES, SENTIMENT, conll_text, run_cli, tiny_bert_dir, write_lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classify run and a tiny ner run to evaluate bad files against."""
    root = tmp_path_factory.mktemp("bad")
    model = tiny_bert_dir(root / "m")
    cls_data = write_lines(root / "c.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    ner_data = root / "n.txt"
    ner_data.write_text(conll_text(NER_SENTENCES), encoding="utf-8")
    common = ["--model", str(model), "--full", "--max-steps", "1", "--batch-size", "8", "--no-progress", "--no-cache"]
    main(["train", "classify", "--train", str(cls_data), "--val", str(cls_data), "--out", str(root / "cls"), *common])
    main(["train", "ner", "--train", str(ner_data), "--val", str(ner_data), "--out", str(root / "ner"), *common])
    return {"model": model, "classify": root / "cls", "ner": root / "ner"}


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


GOOD_CSV = "text,label\ngood film,pos\nbad food,neg\n"
TRAIN_CASES = {
    "malformed_jsonl": ("classify", "t.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": \n',
                        ["t.jsonl:2:", "malformed JSON"]),
    "malformed_csv": ("classify", "t.csv", GOOD_CSV + "awful,neg,extra\n", ["t.csv:4:", "3 fields", "text, label"]),
    "missing_column": ("classify", "t.csv", "review,label\ngood film,pos\n",
                       ["t.csv:2:", "missing field 'text'", "found fields: review, label"]),
    "empty_file": ("classify", "t.csv", "", ["t.csv", "empty"]),
    "empty_jsonl": ("classify", "t.jsonl", "\n\n", ["t.jsonl", "empty"]),
    "conll_columns": ("ner", "t.txt", "john NN B-PER\nsmith B-PER\n", ["t.txt:2:", "2 columns", "have 3"]),
    "ner_empty": ("ner", "t.txt", "", ["t.txt", "empty"]),
    "non_utf8_csv": ("classify", "t.csv", GOOD_CSV.encode() + b"caf\xe9,pos\n", ["t.csv:4:", "not UTF-8"]),
    "non_utf8_conll": ("ner", "t.txt", b"john NN B-PER\n\nm\xfcller NN B-PER\n", ["t.txt:3:", "not UTF-8"]),
}


def write_case(path, content):
    """A case's file: text as UTF-8, bytes as given (the non-UTF-8 cases)."""
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_training_file(case, tmp_path, capsys, trained):
    task, name, content, fragments = TRAIN_CASES[case]
    path = write_case(tmp_path / name, content)
    out = tmp_path / "run"
    code, _, err = run_cli(["train", task, "--model", trained["model"], "--train", path, "--out", out, "--full",
                            "--no-progress", "--no-cache"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


EVAL_CASES = {
    "unknown_label": ("classify", "e.jsonl", '{"text": "good", "label": "pos"}\n{"text": "meh", "label": "neutral"}\n',
                      ["e.jsonl:2:", "label 'neutral' was not seen in training", "neg, pos"]),
    "unknown_tag": ("ner", "e.txt", "john NN B-PER\nacme NN B-ORG\n\nparis NN B-GPE\n",
                    ["e.txt:4:", "tag 'B-GPE' was not seen in training"]),
    "eval_bad_utf8": ("classify", "e.jsonl", b'{"text": "caf\xe9", "label": "pos"}\n', ["e.jsonl:1:", "not UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_bad_eval_file(case, tmp_path, capsys, trained):
    task, name, content, fragments = EVAL_CASES[case]
    path = write_case(tmp_path / name, content)
    metrics = tmp_path / "metrics.json"
    code, out, err = run_cli(["eval", task, "--model", trained[task], "--data", path, "--metrics-out", metrics,
                              "--no-progress"], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not metrics.exists() and out == ""
