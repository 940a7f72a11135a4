"""`lightft export`: a trained run becomes a transformers-readable merged folder or a PEFT adapter."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny_run import make_tiny_model, run_cli, write_classify_jsonl


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    model = make_tiny_model(tmp / "model")
    data = write_classify_jsonl(tmp / "train.jsonl", 64)
    run = tmp / "run"
    res = run_cli(["train", "classify", "--model", model, "--train", data, "--out", run, "--max-steps", "3",
                   "--batch-size", "8", "--lora-targets", "q,v", "--lr", "1e-2", "--no-progress",
                   "--precision", "32-true"], tmp / "cache")  # fp32: the export gives the run's states to 1e-4
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp, model, run


def _lightft_hidden(run, ids):
    from lightft.evaluate import run_module

    module = run_module(str(run))
    module.eval()
    with torch.no_grad():
        return module.backbone(ids).hidden_states


def test_merged_export_loads_in_transformers(lora_run):
    """A trained LoRA classify run (BERT, pooler pooling) exports as BertForSequenceClassification: the
    transformers class, with the run's label names, gives the run's own logits."""
    transformers = pytest.importorskip("transformers")
    tmp, _, run = lora_run
    out = tmp / "merged"
    res = run_cli(["export", run, "--out", out, "--merged"], tmp / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "BertForSequenceClassification: loads in transformers with its head" in res.stderr
    task = json.loads((out / "lightft_task.json").read_text())
    assert task["task"] == "classify" and task["run"] == str(run.resolve())
    assert not (out / "lightft_head.safetensors").exists() and (out / "tokenizer.json").is_file()
    ids = torch.randint(5, 25, (2, 7))
    hf = transformers.AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        expected = hf(input_ids=ids).last_hidden_state
    torch.testing.assert_close(_lightft_hidden(run, ids), expected, rtol=1e-4, atol=1e-4)

    from lightft.evaluate import run_module

    module = run_module(str(run)).eval()
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert [clf.config.id2label[i] for i in range(2)] == module.task_state()["label_names"]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        torch.testing.assert_close(module(batch)["logits"], clf(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_adapter_export_loads_in_peft(lora_run):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    tmp, model, run = lora_run
    out = tmp / "adapter"
    res = run_cli(["export", run, "--out", out, "--adapter"], tmp / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    base = transformers.AutoModel.from_pretrained(model)
    hf = peft.PeftModel.from_pretrained(base, out).eval()
    ids = torch.randint(5, 25, (2, 7))
    with torch.no_grad():
        expected = hf(input_ids=ids).last_hidden_state
    torch.testing.assert_close(_lightft_hidden(run, ids), expected, rtol=1e-4, atol=1e-4)


def test_export_refuses_non_empty_out_and_non_runs(lora_run):
    tmp, model, run = lora_run
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    res = run_cli(["export", run, "--out", busy], tmp / "cache")
    assert res.returncode != 0 and "not empty" in res.stderr and (busy / "keep.txt").read_text() == "mine"
    res = run_cli(["export", model, "--out", tmp / "x"], tmp / "cache")
    assert res.returncode != 0 and "not a run folder" in res.stderr.strip().splitlines()[-1]
    assert not (tmp / "x").exists()


def test_predict_covers_every_record_even_if_training_limited_val(lora_run):
    """The run in `lora_run` was trained with the default split; train another with --limit-val 2
    and check predict still returns one record per input line (no silent subset)."""
    tmp, model, _ = lora_run
    data = write_classify_jsonl(tmp / "limited.jsonl", 40, seed=3)
    run = tmp / "limited_run"
    res = run_cli(["train", "classify", "--model", model, "--train", data, "--out", run, "--max-steps", "1",
                   "--batch-size", "8", "--limit-val", "2", "--full", "--no-progress"], tmp / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    to_predict = write_classify_jsonl(tmp / "predict.jsonl", 9, seed=4)
    res = run_cli(["predict", "classify", "--model", run, "--data", to_predict], tmp / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(res.stdout.strip().splitlines()) == 9


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_exports_and_run_weights_follow_the_umask(lora_run, umask):
    """Folders get 0777 and files 0666 less the umask, as a plain mkdir / open() would (safetensors writes
    0600 and mkdtemp 0700 on their own)."""
    import os

    from lightft.checkpoint import write_atomic_safetensors
    from lightft.cli.export import export_run

    tmp, _, run = lora_run
    old = os.umask(umask)
    try:
        outs = [export_run(str(run), str(tmp / f"m{umask:o}"), adapter=False, dtype=None, force=False, say=str),
                export_run(str(run), str(tmp / f"a{umask:o}"), adapter=True, dtype=None, force=False, say=str)]
        weights = tmp / f"w{umask:o}.safetensors"
        write_atomic_safetensors(weights, {"x": torch.zeros(2)})  # how a run's weights.safetensors is written
    finally:
        os.umask(old)
    assert oct(weights.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    for out in outs:
        assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)
        for f in out.iterdir():
            assert oct(f.stat().st_mode & 0o777) == oct(0o666 & ~umask), f.name


def test_eval_and_predict_of_an_export_use_its_head(lora_run, capsys):
    """An export scores and predicts exactly as its run (its own head, never a fresh one), whether the head
    is in transformers' class or in lightft_head.safetensors; a base model is refused unless
    --untrained-head asks for that baseline; a head of another task is named."""
    from lightft.cli.export import export_run
    from lightft.cli.main import main

    tmp, model, run = lora_run
    export = export_run(str(run), str(tmp / "for-eval"), adapter=False, dtype=None, force=False, say=str)
    adapter = export_run(str(run), str(tmp / "for-eval-adapter"), adapter=True, dtype=None, force=False, say=str)
    data = str(write_classify_jsonl(tmp / "guard.jsonl", 12, seed=5))

    def out_of(args):
        main(args)
        return capsys.readouterr().out

    def last_error(args):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    evaluate = ["eval", "classify", "--data", data, "--no-progress", "--model"]
    of_run = json.loads(out_of([*evaluate, str(run)]))
    of_export = json.loads(out_of([*evaluate, str(export)]))
    assert of_export.keys() == of_run.keys()
    assert all(abs(of_export[k] - of_run[k]) < 1e-5 for k in of_run), (of_run, of_export)
    predictions = [out_of(["predict", "classify", "--data", data, "--model", str(m)]) for m in (run, export)]
    assert predictions[0] == predictions[1] and len(predictions[0].splitlines()) == 12

    line = last_error([*evaluate, str(model)])
    assert "a base model has no trained classify head" in line and "--untrained-head" in line
    line = last_error(["predict", "classify", "--data", data, "--model", str(model)])
    assert "a base model has no trained classify head" in line and "--untrained-head" not in line
    assert "holds a trained classify head, not a ner one" in last_error(
        ["eval", "ner", "--data", data, "--model", str(export)])
    assert 0 <= json.loads(out_of([*evaluate, str(model), "--untrained-head"]))["accuracy"] <= 1
    assert (adapter / "lightft_head.safetensors").is_file()  # an adapter keeps its head beside it
