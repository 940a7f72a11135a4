"""benchmarks/end_to_end.py's table and side selection, without running either side (fast)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "end_to_end.py"


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("end_to_end_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEADER = {"command": "python benchmarks/end_to_end.py", "cpu": "cpu", "threads": 2, "load_start": 0.1, "load_end": 0.2,
          "trainer_bf16": True, "lightft_src": None}


def side(tokens: int, train_s: float, metric: float, **extra) -> dict:
    return {"process_s": train_s + 5, "rss": 2e9, "tokens": tokens, "train_s": train_s, "metric": metric, **extra}


def test_table_gives_the_ratio_of_runs_that_have_both_sides(e2e):
    run = {"workload": "sst2", "round": 1, "order": ["trainer", "lightft"],
           "lightft": side(1000, 10.0, 0.91, precision="bf16-mixed", time_split={"steps": 9.0, "total": 10.0}),
           "trainer": side(1000, 20.0, 0.90)}
    text = e2e.table([run], HEADER)
    assert "| sst2 | lightft | 100 |" in text and "| sst2 | Trainer | 50 |" in text
    assert "| sst2 | **ratio** | **2.00×** |" in text
    assert "--precision bf16-mixed" in text


def test_table_of_one_side_has_no_ratio(e2e):
    run = {"workload": "sst2", "round": 1, "order": ["trainer", "lightft"], "trainer": side(600, 12.0, 0.89)}
    text = e2e.table([run], HEADER)
    assert "| sst2 | Trainer | 50 |" in text and "val_accuracy 0.8900" in text
    assert "ratio" not in text and "| sst2 | lightft |" not in text and "time split" not in text


def test_unknown_side_is_refused(e2e):
    with pytest.raises(SystemExit, match="--sides 'lightft,peft'"):
        e2e.main(["--sides", "lightft,peft", "--tiny"])


def test_packed_records_give_the_trainer_its_batch_without_changing_the_workload(e2e, tmp_path, monkeypatch):
    """Packed instruct training: the Trainer's examples per step (and steps, for a step budget) come back beside
    the records, for the caller's copy of the workload; the workload itself is not edited behind its back."""
    from tiny_decoder import SIMPLE_CHAT, tiny_decoder

    model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no", "maybe", "ok"] * 4]
    (data / "train.json").write_text(json.dumps(rows))
    monkeypatch.setattr(e2e, "DATA", data)
    w = dict(task="instruct", train="train.json", val="train.json", batch_size=2, max_length=256, epochs=1,
             packing=True, max_steps=3)
    before = dict(w)
    path, budget = e2e.trainer_records(w, model, "train", 16, tmp_path)
    assert w == before
    assert len(path.read_text().splitlines()) == 16
    # 16 short examples pack into a few rows of 256: each of lightft's rows holds several examples
    assert budget["trainer_batch"] > w["batch_size"] and budget["trainer_max_steps"] >= 1
    _, val_budget = e2e.trainer_records(w, model, "val", 16, tmp_path)
    assert val_budget == {}
