"""The shared training machinery: readers, token cache, options/config files, optimiser groups, schedules."""

from __future__ import annotations

import json

import pytest
import torch

from lightft.data.cache import cached
from lightft.data.readers import read_records, read_text
from lightft.errors import LightftError
from lightft.options import Options, read_config_file
from lightft.tasks.optim import lr_lambda, parameter_groups


def test_readers_name_file_and_line(tmp_path):
    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"text": "ok", "label": 1}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(LightftError, match=r"a\.jsonl:2: malformed JSON"):
        read_records(bad_json)
    bad_csv = tmp_path / "b.csv"
    bad_csv.write_text("text,label\nfine,1\ntoo,many,fields\n", encoding="utf-8")
    with pytest.raises(LightftError, match=r"b\.csv:3: 3 fields, but the header has 2"):
        read_records(bad_csv)
    latin = tmp_path / "c.csv"
    latin.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(LightftError, match=r"c\.csv:2: not UTF-8"):
        read_text(latin)
    empty = tmp_path / "d.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(LightftError, match="empty"):
        read_records(empty)


def test_tsv_keeps_bare_quotes(tmp_path):
    f = tmp_path / "glue.tsv"
    f.write_text('sentence\tlabel\nit \'s a "great" film\t1\n', encoding="utf-8")
    [(line, rec)] = read_records(f)
    assert line == 2 and rec == {"sentence": 'it \'s a "great" film', "label": "1"}


def test_token_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path))
    examples = [{"input_ids": [1, 2, 3], "label": "pos", "line": 2}, {"input_ids": [4], "label": "neg", "line": 3}]
    calls = []

    def build():
        calls.append(1)
        return examples, {"records": 2}

    first, stats, hit = cached("k1", build)
    second, stats2, hit2 = cached("k1", build)
    assert (hit, hit2) == (False, True) and len(calls) == 1
    assert second == examples and stats2 == {"records": 2}


def test_config_file_keys_are_checked_and_paths_relative(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('train = "data/train.jsonl"\nlora_r = 4\n', encoding="utf-8")
    data = read_config_file(cfg)
    assert data["train"] == str(tmp_path / "data" / "train.jsonl") and data["lora_r"] == 4
    cfg.write_text("learning_rate = 1\n", encoding="utf-8")
    with pytest.raises(LightftError, match="unknown key 'learning_rate'"):
        read_config_file(cfg)


def test_yaml_config_cannot_build_objects(tmp_path):
    pytest.importorskip("yaml")
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("lr: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(LightftError, match="malformed YAML"):
        read_config_file(cfg)


def test_no_weight_decay_on_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = parameter_groups(model.named_parameters(), 0.1, 1e-3)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 1 and decayed[0] is model[0].weight


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_warmup_then_decay(schedule):
    f = lr_lambda(total_steps=100, warmup=0.1, schedule=schedule)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    end = f(100)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.0, abs=1e-6)
    assert lr_lambda(100, 5, "linear")(4) == pytest.approx(1.0)  # warm-up given in steps


def test_options_defaults_resolve_lr():
    assert Options().resolved_lr() == 2e-4 and Options(lora=False).resolved_lr() == 5e-5
    with pytest.raises(LightftError, match="unknown key"):
        Options.from_dict({"nope": 1})


def test_max_steps_shorter_than_an_epoch_validates_and_keeps_the_best(tmp_path, capsys, recwarn):
    """--max-steps 3 of a 12-batch epoch: validation runs at the end, best.ckpt exists, the metrics are
    the validated ones, and no 'could not find the monitored key' warning reaches the user."""
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    from lightft.cli.main import main

    make_tiny_model(tmp_path / "m")
    write_classify_jsonl(tmp_path / "train.jsonl", 48)
    write_classify_jsonl(tmp_path / "val.jsonl", 8, seed=1)
    main(["train", "classify", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.jsonl"),
          "--val", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / "run"), "--max-steps", "3",
          "--batch-size", "4", "--no-progress", "--no-cache", "--threads", "1"])
    out = capsys.readouterr()
    metrics = json.loads(out.out.strip().splitlines()[-1])
    assert metrics["steps"] == 3 and "val_accuracy" in metrics
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    assert not [w for w in recwarn if "could not find the monitored key" in str(w.message)]


def test_training_builds_the_model_once(tmp_path, monkeypatch):
    """One base-model load per run: a second build held two models in memory at once (peak RSS) for nothing."""
    import lightft.train.run as run
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    from lightft.cli.main import main

    built = []
    real = run.build_module
    monkeypatch.setattr(run, "build_module", lambda *a, **k: built.append(1) or real(*a, **k))
    make_tiny_model(tmp_path / "m")
    write_classify_jsonl(tmp_path / "train.jsonl", 16)
    main(["train", "classify", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.jsonl"),
          "--out", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "4", "--no-progress", "--no-cache",
          "--threads", "1"])
    assert len(built) == 1


def test_progress_total_counts_the_steps_max_steps_leaves():
    from types import SimpleNamespace

    from lightft.train.callbacks import StepBoundProgressBar

    bar = StepBoundProgressBar()
    fake = SimpleNamespace(max_steps=5, global_step=2, accumulate_grad_batches=2, num_training_batches=100,
                           max_epochs=3)
    bar._trainer = fake
    assert bar.total_train_batches == 6
    fake.max_steps = -1
    assert bar.total_train_batches == 100
