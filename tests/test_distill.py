"""Knowledge distillation (--teachers): soft targets are the teachers' own predictions, the loss mixes them
with the gold labels as documented, alpha 0 trains exactly as without teachers, and bad input is refused."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lightft.options import Options
from supervised_utils import SENTIMENT, run_cli, tiny_bert_dir, write_lines

TRAIN = ["--epochs", "1", "--batch-size", "4", "--no-progress", "--full", "--lr", "1e-3", "--threads", "1"]


@pytest.fixture
def setup(tmp_path, capsys):
    """A tiny model, a labelled file and one trained teacher run."""
    model = tiny_bert_dir(tmp_path / "m")
    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT * 2])
    teacher = tmp_path / "teacher"
    code, _, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out", teacher,
                            "--seed", "3", *TRAIN], capsys)
    assert code == 0, err
    return tmp_path, model, data, teacher


def test_loss_mixes_soft_and_gold_targets(hf_folder):
    """alpha x CE(teachers' probabilities) + (1 - alpha) x CE(gold); batches without soft targets (validation)
    get the plain gold loss."""
    from lightft.checkpoint import load_model
    from lightft.tasks.classify import ClassificationModule

    _, folder = hf_folder("bert")
    module = ClassificationModule(load_model(folder), Options(distill_alpha=0.3, classifier_dropout=0.0),
                                  label_names=["a", "b", "c"])
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    soft = torch.softmax(torch.randn(4, 3), -1)
    out = {"logits": logits}
    expected = 0.3 * -(soft * logits.log_softmax(-1)).sum(-1).mean() + 0.7 * F.cross_entropy(logits, labels)
    torch.testing.assert_close(module.loss({"labels": labels, "soft_targets": soft}, out), expected)
    torch.testing.assert_close(module.loss({"labels": labels}, out), F.cross_entropy(logits, labels))


def test_temperature_softens_both_sides_and_scales_by_its_square():
    """--distill-temperature T: targets p^(1/T) renormalised, student softmax(logits / T), the term times T^2;
    for one teacher the softened targets equal softmax(teacher logits / T); T = 1 is the plain cross-entropy."""
    from lightft.tasks.classify import soft_cross_entropy

    logits, teacher_logits = torch.randn(5, 3), torch.randn(5, 3)
    p = teacher_logits.softmax(-1)
    t = 2.5
    expected = t * t * -((teacher_logits / t).softmax(-1) * (logits / t).log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, p, t), expected)
    torch.testing.assert_close(soft_cross_entropy(logits, p, 1.0), -(p * logits.log_softmax(-1)).sum(-1).mean())
    # A target of exactly 0 (a rounded probability) stays finite: it is floored at the stored resolution.
    hard = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.isfinite(soft_cross_entropy(torch.randn(1, 3), hard, 3.0))


def test_soft_targets_are_the_teachers_averaged_predictions(setup, capsys):
    """Each training example carries the mean of the teachers' `lightft predict` probabilities for its line."""
    from lightft.data.classify import ClassificationDataModule
    from lightft.tokenizer import load_tokenizer
    from lightft.train.teachers import attach_teacher_targets

    tmp_path, model, data, teacher = setup
    second = tmp_path / "teacher2"
    code, _, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out", second,
                            "--seed", "4", *TRAIN], capsys)
    assert code == 0, err
    preds = []
    for run in (teacher, second):
        code, out, err = run_cli(["predict", "classify", "--model", run, "--data", data], capsys)
        assert code == 0, err
        preds.append({r["line"]: r["probabilities"] for r in map(json.loads, out.splitlines())})
    opts = Options(train=str(data), teachers=f"{teacher},{second}", threads=1, precision="32-true")
    dm = ClassificationDataModule(load_tokenizer(model), opts, train_file=str(data), val_file=str(data))
    dm.setup("fit")
    attach_teacher_targets(dm, "classify", opts)
    assert dm.label_names == ["neg", "pos"]
    for e in dm.datasets["train"]:
        want = [(preds[0][e["line"]][n] + preds[1][e["line"]][n]) / 2 for n in dm.label_names]
        assert e["soft_targets"] == pytest.approx(want, abs=2e-6)
    batch = dm.collate(dm.datasets["train"][:3])
    assert batch["soft_targets"].shape == (3, 2)
    assert "soft_targets" not in dm.collate(dm.datasets["val"][:3])  # validation stays on the gold labels


def test_alpha_zero_trains_as_without_teachers(setup, capsys):
    """--distill-alpha 0 multiplies the soft term by zero: the same weights as a run without --teachers."""
    tmp_path, model, data, teacher = setup
    common = ["train", "classify", "--model", model, "--train", data, "--val", data, *TRAIN]
    code, _, err = run_cli([*common, "--out", tmp_path / "plain"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*common, "--out", tmp_path / "a0", "--teachers", teacher, "--distill-alpha", "0"], capsys)
    assert code == 0, err
    assert "[distill] teacher" in err
    plain, a0 = load_file(str(tmp_path / "plain" / "weights.safetensors")), \
        load_file(str(tmp_path / "a0" / "weights.safetensors"))
    assert plain.keys() == a0.keys()
    for k in plain:
        torch.testing.assert_close(plain[k], a0[k], rtol=0, atol=0)
    code, _, err = run_cli([*common, "--out", tmp_path / "a1", "--teachers", teacher, "--distill-alpha", "1"], capsys)
    assert code == 0, err
    a1 = load_file(str(tmp_path / "a1" / "weights.safetensors"))
    assert any(not torch.equal(plain[k], a1[k]) for k in plain)  # the teacher's targets did change training
    info = json.loads((tmp_path / "a1" / "run.json").read_text())
    assert info["options"]["teachers"] == str(teacher) and info["options"]["distill_alpha"] == 1.0
    assert "teachers" in json.loads((tmp_path / "a1" / "metrics.json").read_text())["time_split"]


@pytest.mark.parametrize("case", ["alpha_alone", "temperature_alone", "temperature_zero", "not_a_run",
                                  "other_labels", "itself", "empty"])
def test_bad_teacher_options_are_one_line_errors(setup, capsys, case):
    tmp_path, model, data, teacher = setup
    out = tmp_path / "student"
    extra = {"alpha_alone": ["--distill-alpha", "0.7"],
             "temperature_alone": ["--distill-temperature", "2"],
             "temperature_zero": ["--teachers", str(teacher), "--distill-temperature", "0"],
             "not_a_run": ["--teachers", str(tmp_path)],
             "other_labels": ["--teachers", str(teacher)],
             "itself": ["--teachers", str(teacher), "--overwrite"],
             "empty": ["--teachers", ","]}[case]
    train = data
    if case == "other_labels":
        train = write_lines(tmp_path / "three.jsonl", [{"text": t, "label": y if i % 3 else "mixed"}
                                                        for i, (t, y) in enumerate(SENTIMENT)])
    if case == "itself":
        out = teacher
    code, _, err = run_cli(["train", "classify", "--model", model, "--train", train, "--val", train, "--out", out,
                            *TRAIN, *extra], capsys)
    assert code != 0
    message = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert {"alpha_alone": "--distill-alpha has no effect without --teachers",
            "temperature_alone": "--distill-temperature has no effect without --teachers",
            "temperature_zero": "--distill-temperature",
            "not_a_run": "not a trained run folder",
            "other_labels": "a teacher must predict the same labels",
            "itself": "is the --out run",
            "empty": "--teachers is empty"}[case] in message, message


def test_a_decoder_with_its_own_tokenizer_can_teach_an_encoder(setup, capsys):
    """Each teacher reads the text with its own tokenizer: a tiny Llama (characters) teaches the tiny BERT
    (word pieces), and the student's targets are the decoder's own predictions."""
    from tiny_decoder import tiny_decoder

    tmp_path, model, data, _ = setup
    decoder = tiny_decoder(tmp_path, "llama")
    teacher = tmp_path / "llama-teacher"
    code, _, err = run_cli(["train", "classify", "--model", decoder, "--train", data, "--val", data, "--out", teacher,
                            *TRAIN], capsys)
    assert code == 0, err
    code, out, err = run_cli(["predict", "classify", "--model", teacher, "--data", data], capsys)
    assert code == 0, err
    want = {r["line"]: r["probabilities"] for r in map(json.loads, out.splitlines())}

    from lightft.data.classify import ClassificationDataModule
    from lightft.tokenizer import load_tokenizer
    from lightft.train.teachers import attach_teacher_targets

    opts = Options(train=str(data), teachers=str(teacher), threads=1, precision="32-true")
    dm = ClassificationDataModule(load_tokenizer(model), opts, train_file=str(data), val_file=str(data))
    dm.setup("fit")
    attach_teacher_targets(dm, "classify", opts)
    for e in dm.datasets["train"]:
        assert e["soft_targets"] == pytest.approx([want[e["line"]][n] for n in dm.label_names], abs=1e-6)
    code, _, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out",
                            tmp_path / "student", "--teachers", teacher, *TRAIN], capsys)
    assert code == 0, err


def test_limit_train_without_val_file(setup, capsys):
    """--limit-train with a validation split held out of --train: the kept examples are not the file's first
    lines, so every record gets its teachers' prediction."""
    tmp_path, model, data, teacher = setup
    code, _, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val-fraction", "0.25",
                            "--limit-train", "5", "--out", tmp_path / "student", "--teachers", teacher, *TRAIN], capsys)
    assert code == 0, err


def test_config_file_teachers_are_relative_to_the_file(tmp_path):
    """Like --train or --init in a config file, each teacher run is found relative to the file, not the shell."""
    from lightft.options import read_config_file

    (tmp_path / "recipes").mkdir()
    cfg = tmp_path / "recipes" / "student.toml"
    cfg.write_text(f'teachers = "runs/a, {tmp_path}/b"\ndistill_alpha = 0.7\n')
    data = read_config_file(cfg)
    assert data["teachers"] == f"{tmp_path}/recipes/runs/a,{tmp_path}/b" and data["distill_alpha"] == 0.7
