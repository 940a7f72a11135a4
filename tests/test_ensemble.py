"""Ensembles (`lightft eval / predict classify --model A,B`): the members' `lightft predict` probabilities
averaged line by line, scored like one run; members may be different models with their own tokenizers;
bad combinations are one-line errors."""

from __future__ import annotations

import json
import math

import pytest

from supervised_utils import SENTIMENT, run_cli, tiny_bert_dir, write_lines

TRAIN = ["--epochs", "1", "--batch-size", "4", "--no-progress", "--full", "--lr", "1e-3", "--threads", "1"]


@pytest.fixture
def members(tmp_path, capsys):
    """A labelled file and two trained runs: a tiny BERT and a tiny Llama (another tokenizer)."""
    from tiny_decoder import tiny_decoder

    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT * 2])
    runs = []
    for name, model in (("bert", tiny_bert_dir(tmp_path / "m")), ("llama", tiny_decoder(tmp_path, "llama"))):
        runs.append(tmp_path / name)
        code, _, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out",
                                runs[-1], "--seed", "3", *TRAIN], capsys)
        assert code == 0, err
    return tmp_path, data, runs


def predictions(model, data, capsys) -> dict[int, dict]:
    code, out, err = run_cli(["predict", "classify", "--model", model, "--data", data, "--threads", "1"], capsys)
    assert code == 0, err
    return {r["line"]: r for r in map(json.loads, out.splitlines())}


def test_ensemble_averages_the_members_predictions(members, capsys):
    """predict: each line's probabilities are the members' mean and its label their argmax; eval: accuracy,
    macro-F1 and loss recomputed here from those averages."""
    tmp_path, data, runs = members
    single = [predictions(run, data, capsys) for run in runs]
    joint = predictions(f"{runs[0]},{runs[1]}", data, capsys)
    assert joint.keys() == single[0].keys() == single[1].keys()
    gold = {i + 1: y for i, (_, y) in enumerate(SENTIMENT * 2)}
    correct, nll, per_label = 0, 0.0, {"neg": [0, 0, 0], "pos": [0, 0, 0]}  # true pos, false pos, false neg
    for line, rec in joint.items():
        want = {n: (single[0][line]["probabilities"][n] + single[1][line]["probabilities"][n]) / 2
                for n in ("neg", "pos")}
        assert rec["probabilities"] == pytest.approx(want, abs=1e-6)
        assert rec["label"] == max(want, key=want.get)
        correct += rec["label"] == gold[line]
        nll -= math.log(max(want[gold[line]], 1e-6))
        for n in per_label:
            per_label[n][0] += rec["label"] == n == gold[line]
            per_label[n][1] += rec["label"] == n != gold[line]
            per_label[n][2] += gold[line] == n != rec["label"]
    code, out, err = run_cli(["eval", "classify", "--model", f"{runs[0]},{runs[1]}", "--data", data,
                              "--threads", "1", "--metrics-out", tmp_path / "m.json"], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics == json.loads((tmp_path / "m.json").read_text())
    f1 = [2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0 for tp, fp, fn in per_label.values()]
    assert metrics["accuracy"] == pytest.approx(correct / len(joint), abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 2, abs=1e-5)
    assert metrics["loss"] == pytest.approx(nll / len(joint), abs=1e-4)
    assert set(metrics) == set(json.loads(run_cli(["eval", "classify", "--model", runs[0], "--data", data,
                                                   "--threads", "1", "--no-progress"], capsys)[1]))


@pytest.mark.parametrize("case", ["other_labels", "not_classify", "untrained_head", "typo", "base_member"])
def test_bad_ensembles_are_one_line_errors(members, capsys, case):
    tmp_path, data, runs = members
    model, command, extra = f"{runs[0]},{runs[1]}", ["eval", "classify"], []
    if case == "other_labels":
        three = write_lines(tmp_path / "three.jsonl", [{"text": t, "label": y if i % 3 else "mixed"}
                                                        for i, (t, y) in enumerate(SENTIMENT * 2)])
        other = tmp_path / "three-run"
        code, _, err = run_cli(["train", "classify", "--model", tiny_bert_dir(tmp_path / "m3"), "--train", three,
                                "--val", three, "--out", other, *TRAIN], capsys)
        assert code == 0, err
        model = f"{runs[0]},{other}"
    if case == "not_classify":
        command = ["predict", "ner"]
    if case == "untrained_head":
        extra = ["--untrained-head"]
    if case == "typo":
        model = f"{runs[0]},{tmp_path / 'nosuch'}"
    if case == "base_member":
        model = f"{runs[0]},{tmp_path / 'm'}"
    code, _, err = run_cli([*command, "--model", model, "--data", data, "--threads", "1", *extra], capsys)
    assert code != 0
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert {"other_labels": "every member of an ensemble must predict the same labels",
            "not_classify": "ensembles (several runs, comma-separated) are implemented for classify, not ner",
            "untrained_head": "--untrained-head scores one base model",
            "typo": "nosuch: model folder not found",
            "base_member": "a base model has no trained classify head; give a run folder (lightft train classify ... "
                           "--out RUN) or an export of one"}[case] in message, message
    assert "--untrained-head" not in message or case == "untrained_head"
