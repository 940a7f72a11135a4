"""scripts/decoder/judge_instruct.py: each check on hand-written answers, the shipped prompt set, a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from lightft.errors import LightftError
from tiny_decoder import SIMPLE_CHAT, tiny_decoder

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("judge_instruct", REPO / "scripts" / "decoder" / "judge_instruct.py")
judge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(judge)


@pytest.mark.parametrize("answer, checks, expected", [
    ("12", [{"kind": "number", "value": 12}], True),
    ("The answer is 1,200.", [{"kind": "number", "value": 1200}], True),
    ("It is 13", [{"kind": "number", "value": 12}], False),
    ("Cold.", [{"kind": "word", "any_of": ["cold"]}], True),
    ("It is cold", [{"kind": "word", "any_of": ["cold"]}], False),
    ("1. red\n2. blue\n3) green", [{"kind": "list", "n": 3}], True),
    ("- a\n- b\n* c\n• d", [{"kind": "list", "n": 4}], True),
    ("Here:\n1. red\n2. blue", [{"kind": "list", "n": 3}], False),
    ("red, yellow and blue", [{"kind": "comma_list", "n": 2}], True),
    ("red, yellow, blue.", [{"kind": "comma_list", "n": 3}], True),
    ("One. Two!", [{"kind": "sentences", "n": 2}], True),
    ("One. Two! Three?", [{"kind": "sentences", "n": 2}], False),
    ("Version 2.5 is out.", [{"kind": "sentences", "n": 1}], True),
    ("a\n\nb\nc", [{"kind": "lines", "n": 3}], True),
    ("HELLO!", [{"kind": "uppercase"}, {"kind": "contains", "all": ["HELLO"]}], True),
    ("Hello", [{"kind": "contains", "all": ["HELLO"]}], False),
    ("the cat naps", [{"kind": "lowercase"}, {"kind": "contains", "all": ["cat"]}], True),
    ('```json\n{"name": "Ana", "age": 30}\n```', [{"kind": "json", "keys": ["name", "age"]}], True),
    ('{"name": "Ana"}', [{"kind": "json", "keys": ["name", "age"]}], False),
    ("Today it rains.", [{"kind": "starts_with", "text": "Today"}], True),
    ("Water boils at 100 C. done.", [{"kind": "ends_with", "text": "done"}], True),
    ("Hi there.", [{"kind": "ends_with", "text": "!"}], False),
    ("A sunny morning glows.", [{"kind": "not_contains", "any": ["sun"]}], True),
    ("The Sun glows.", [{"kind": "not_contains", "any": ["sun"]}], False),
    ("a b c", [{"kind": "max_words", "n": 3}], True),
    ("", [{"kind": "max_words", "n": 3}], False),
    ("1  2 3 4 5.", [{"kind": "exact", "any_of": ["1 2 3 4 5"]}], True),
])
def test_checks(answer, checks, expected):
    assert judge.passes(answer, checks) is expected


def test_shipped_prompt_set_is_valid():
    prompts = judge.read_prompts(judge.PROMPTS)
    assert 30 <= len(prompts) <= 40 and len({p["id"] for p in prompts}) == len(prompts)
    assert {c["kind"] for p in prompts for c in p["checks"]} == set(judge.CHECKS)  # every kind is used


def test_bad_prompt_files(tmp_path):
    bad = tmp_path / "p.jsonl"
    for line, match in (('{"prompt": "x", "checks": [{"kind": "rhyme"}]}', "unknown check"),
                        ('{"prompt": "x", "checks": [{"kind": "number"}]}', "takes other arguments"),
                        ('{"prompt": "x"}', r"p.jsonl:1: expected")):
        bad.write_text(line + "\n", encoding="utf-8")
        with pytest.raises(LightftError, match=match):
            judge.read_prompts(bad)


def test_end_to_end_on_a_tiny_chat_model(tmp_path, capsys):
    model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Say 7", "checks": [{"kind": "number", "value": 7}]}\n'
                       '{"id": "b", "prompt": "Hi", "checks": [{"kind": "max_words", "n": 50}]}\n', encoding="utf-8")
    val = tmp_path / "val.json"
    val.write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 3]))
    answers = tmp_path / "answers.jsonl"
    code = judge.main(["--model", str(model), "--prompts", str(prompts), "--val", str(val), "--max-new-tokens", "6",
                       "--out", str(tmp_path / "r.json"), "--answers-out", str(answers)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert report["prompts"] == 2 and 0 <= report["checks_passed"] <= 1 and 0 <= report["eos_rate"] <= 1
    v = report["validation"]
    assert report["answer_tokens_mean"] <= 6 and v["perplexity"] > 1
    assert abs(math.log(v["perplexity"]) - v["response_loss"]) < 1e-4  # the per-token mean, not the batches' mean
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and {"answer", "finish_reason", "passed"} <= set(rows[0])
    assert judge.main(["--model", str(tmp_path / "nope"), "--prompts", str(prompts)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
