"""Bad-input corpus, part 2: data that would train silently wrong, and data files the machine will not read.

Strict typed input (lightft/data/readers.py, lightft/textfile.py, lightft/data/classify.py): labels are
strings or integers, a null training label is an error, a header or a JSON object naming a key twice
is an error, quotes are parsed strictly, JSON is bounded in depth and free of lone surrogates, and
option values a data module cannot use are refused before any work. Every case: one escaped
`error:` line naming the file (and line) or flag, non-zero exit, nothing written (tests/bad_cases.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.bad_cases import build_env, check_case, check_error_output, run_without_root_powers, train_with


def data_files(d: Path, env: dict[str, str]) -> None:
    """Generated cases: nesting too deep for a parser, a secret-looking first line, text for lm / mlm."""
    deep = "[" * 100_000 + "]" * 100_000
    (d / "deep.jsonl").write_text('{"text": "good", "label": "pos"}\n{"text": ' + deep + ', "label": "neg"}\n',
                                  encoding="utf-8")
    (d / "deep.json").write_text(f'[{{"text": "good", "label": "pos"}}, {deep}]', encoding="utf-8")
    (d / "deep_squad.json").write_text('{"data": ' + deep + '}', encoding="utf-8")
    # a CSV whose first line is a "secret": an error may quote a short excerpt of it, never the whole line
    (d / "secret.csv").write_text("passwd:" + "S" * 500 + "TAIL_OF_THE_SECRET,x\ngood movie,pos\n", encoding="utf-8")
    (d / "text.txt").write_text("good movie was fun\nbad plot was boring\n" * 4, encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("bad_data")
    mp.setenv("LIGHTFT_CACHE", str(d / "cache"))
    yield build_env(d, data_files)
    mp.undo()


QA = ("qa", "--doc-stride", "8", "--max-length", "32")
CASES = [
    # duplicated names: the last column / key would silently replace the first
    ("CSV header names a column twice", train_with(data="{bad}/dup_header.csv"),
     "dup_header.csv:1: column 'text' appears twice in the header (columns 1 and 3)"),
    ("TSV header names a column twice", train_with(data="{bad}/dup_header.tsv"), "column 'label' appears twice"),
    ("JSONL object names a key twice", train_with(data="{bad}/dup_key.jsonl"),
     "dup_key.jsonl:2: key 'text' appears twice in one object"),
    ("SQuAD question names a key twice", train_with("--doc-stride", "8", task="qa", data="{bad}/squad_dup_key.json"),
     "key 'id' appears twice"),
    # quoting
    ("CSV quote never closed", train_with(data="{bad}/unterminated_quote.csv"),
     "unterminated_quote.csv:3: malformed CSV (a quote opened in the record starting on line 3 is never closed"),
    ("CSV text after a closing quote", train_with(data="{bad}/quote_then_text.csv"),
     "quote_then_text.csv:3: malformed CSV"),
    ("CSV quoted field merges records", train_with(data="{bad}/quote_spans_lines.csv"),
     "quote_spans_lines.csv:3: 3 fields, but the header has 2 (text, label) (a quoted field runs from line 3 to 4"),
    # labels: strings or integers
    ("label is a list", train_with(data="{bad}/label_list.jsonl"),
     "label_list.jsonl:2: label ['neg'] is a list; labels must be strings or integers"),
    ("label is an object", train_with(data="{bad}/label_dict.jsonl"), "label {'name': 'neg'} is an object"),
    ("label is a boolean", train_with(data="{bad}/label_bool.jsonl"),
     "label_bool.jsonl:1: label True is a boolean; labels must be strings or integers (bad labels on lines 1, 2"),
    ("label is a float", train_with(data="{bad}/label_float.jsonl"), "label_float.jsonl:3: label 1.0 is a float"),
    ("label is NaN", train_with(data="{bad}/label_nan.jsonl"), "label_nan.jsonl:2: label nan is NaN"),
    ("label is null in training data", train_with(data="{bad}/label_null.jsonl"),
     "label_null.jsonl:3: label None is null (every training and validation record needs a label)"),
    ("label is null in validation data", train_with("--val", "{bad}/label_null.jsonl"), "label None is null"),
    ("several bad labels are all named", train_with(data="{bad}/labels_mixed.jsonl"),
     "labels_mixed.jsonl:2: label [0] is a list; labels must be strings or integers (bad labels on lines 2, 4; 2 in all)"),
    # JSON the parser must not be trusted with
    ("JSONL lone surrogate", train_with(data="{bad}/lone_surrogate.jsonl"),
     "lone_surrogate.jsonl:2: string in text holds a lone UTF-16 surrogate (\\ud800)"),
    ("JSONL nested 100k deep", train_with(data="{d}/deep.jsonl"), "deep.jsonl:2: JSON nested too deeply"),
    ("JSON list nested 100k deep", train_with(data="{d}/deep.json"), "deep.json: JSON nested too deeply"),
    ("SQuAD qas: null", train_with(*QA[1:], task="qa", data="{bad}/squad_qas_null.json"),
     "data[0].paragraphs[0]: 'qas' must be a list of questions, not None"),
    ("SQuAD lone surrogate", train_with(*QA[1:], task="qa", data="{bad}/squad_surrogate.json"),
     "squad_surrogate.json: string in data[0].paragraphs[0].context holds a lone UTF-16 surrogate (\\udc80)"),
    ("SQuAD nested 100k deep", train_with(*QA[1:], task="qa", data="{d}/deep_squad.json"), "JSON nested too deeply"),
    # values a data module cannot use
    ("qa --doc-stride -1", train_with("--doc-stride", "-1", task="qa", data="{bad}/squad_qas_null.json"),
     "--doc-stride"),
    ("lm --max-length 1", train_with("--max-length", "1", task="lm", data="{d}/text.txt"), "--max-length"),
    ("mlm --max-length 2", train_with("--max-length", "2", task="mlm", data="{d}/text.txt"),
     "--max-length 2 is too short for mlm"),
    # what an error may quote from a file: escaped, and short
    ("CSV header with ANSI escapes", train_with(data="{bad}/escape_header.csv"),
     "missing field 'text'; found fields: \\x1b[31mtext\\x1b[0m, label"),
    ("first line of a file is not printed whole", train_with(data="{d}/secret.csv"), "found fields: passwd:SSS"),
    ("eval: forged error line in a label", ["eval", "classify", "--model", "{run}", "--data",
                                             "{bad}/forged_label.jsonl"],
     "label 'neg\\nerror: all good \\x1b[2J' was not seen in training"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_gives_one_line_error_and_no_output(env, tmp_path, capsys, argv, expected):
    line = check_case(env, tmp_path, capsys, argv, expected)
    assert "TAIL_OF_THE_SECRET" not in line and len(line) < 2100


UNREADABLE = [
    ("data file", "train.jsonl", train_with(), "train.jsonl: cannot read the file (Permission denied)"),
    ("--config file", "c.yaml", train_with("--config", "{d}/c.yaml"), "c.yaml' is not readable"),
    ("config.json", "model/config.json", train_with(), "config.json: cannot read the file (Permission denied)"),
    ("--prompts-file", "prompts.txt", ["generate", "--model", "{model}", "--prompts-file", "{d}/prompts.txt"],
     "prompts.txt' is not readable"),
    ("chat_template.jinja", "model/chat_template.jinja", train_with(),
     "chat_template.jinja: cannot read the file (Permission denied)"),
    ("--out in a read-only folder", "locked", [a.replace("{out}", "{d}/locked/run") for a in train_with()],
     "locked/run: cannot write in"),
]


@pytest.fixture(scope="module")
def unreadable_results(tmp_path_factory):
    """Every UNREADABLE case run once, each with its own file at mode 000, in one unprivileged process."""
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    results = {}
    cases, roots = [], []
    for name, target, argv, _ in UNREADABLE:
        d = tmp_path_factory.mktemp("unreadable")
        make_tiny_model(d / "model") if not roots else shutil.copytree(roots[0] / "model", d / "model")
        write_classify_jsonl(d / "train.jsonl", 8)
        (d / "c.yaml").write_text("lr: 1e-3\n", encoding="utf-8")
        (d / "prompts.txt").write_text("hello\n", encoding="utf-8")
        (d / "model" / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")
        (d / "locked").mkdir()
        os.chmod(d / target, 0o555 if target == "locked" else 0)
        cases.append([a.format(d=d, model=d / "model", train=d / "train.jsonl", out=d / "out") for a in argv])
        roots.append(d)
    for (name, *_), d, result in zip(UNREADABLE, roots, run_without_root_powers(cases, roots[0] / "cache")):
        results[name] = (result, d)
    return results


@pytest.mark.parametrize("name, expected", [(c[0], c[3]) for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_unreadable_file_is_one_line(unreadable_results, name, expected):
    """chmod 000 on a file lightft must read (or 555 on the folder it must write in): one line naming it."""
    (code, err), d = unreadable_results[name]
    check_error_output(code, err, expected)
    assert not (d / "out").exists()
