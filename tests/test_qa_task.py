"""QA and MLM end to end on a tiny encoder: train -> eval -> predict, windows across batches, --init transfer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import minilm_dir
from lightft.cli.main import main
from lightft.data.qa import QADataModule
from lightft.options import Options
from lightft.evaluate import run_module
from lightft.train.run import apply_init_run, build_module
from lightft.tokenizer import load_tokenizer

WORDS = "apple river stone cloud green house music paper light table".split()
SMALL = ["--full", "--max-steps", "2", "--batch-size", "4", "--max-length", "40", "--doc-stride", "8", "--no-progress",
         "--no-cache", "--epochs", "1", "--threads", "2"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny random BERT with MiniLM's tokenizer (so real text tokenises) and an MLM head in its checkpoint."""
    transformers = pytest.importorskip("transformers")
    src = minilm_dir()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("enc") / "tiny"
    transformers.BertForMaskedLM(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, folder / name)
    return str(folder)


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    """Six questions over long contexts (several windows each at --max-length 40)."""
    paragraphs = []
    for p in range(2):
        words = [WORDS[(i + p) % len(WORDS)] + ("" if i % 7 else ".") for i in range(50)]
        context = " ".join(words)
        qas = []
        for q, at in enumerate((3, 25, 47)):
            start = sum(len(w) + 1 for w in words[:at])
            qas.append({"id": f"p{p}_{q}", "question": f"which word {q}?",
                        "answers": [{"text": words[at].rstrip("."), "answer_start": start}]})
        paragraphs.append({"context": context, "qas": qas})
    path = tmp_path_factory.mktemp("squad") / "train.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def qa_run(encoder, squad, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "qa"
    main(["train", "qa", "--model", encoder, "--train", squad, "--val", squad, "--out", str(out), *SMALL])
    return str(out)


def test_train_eval_predict(qa_run, squad, tmp_path, capsys):
    metrics = json.loads(Path(qa_run, "metrics.json").read_text())
    assert {"val_exact_match", "val_f1", "val_loss"} <= set(metrics)
    capsys.readouterr()
    main(["eval", "qa", "--model", qa_run, "--data", squad, "--no-progress"])
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["f1"] == pytest.approx(metrics["val_f1"], abs=1e-3)  # the same weights, the same windows
    assert "strict_acc" in evaluated and evaluated["questions"] == 2.0  # ids p0_0.. group into p0, p1
    out = tmp_path / "pred.jsonl"
    main(["predict", "qa", "--model", qa_run, "--data", squad, "--output", str(out), "--batch-size", "1"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"p{p}_{q}" for p in range(2) for q in range(3))
    for r in records:
        assert r["answer"] == r["top_k"][0]["answer"] and r["score"] == r["top_k"][0]["score"]
        assert 1 <= len(r["top_k"]) <= 5 and all(c["answer"].strip() for c in r["top_k"])


def test_windows_of_one_question_across_batches(qa_run, encoder, squad):
    """Scoring does not depend on how windows fall into batches (batch size 1 vs all at once)."""
    module = run_module(qa_run)
    module.eval()
    dm = QADataModule(load_tokenizer(encoder), module.opts, eval_file=squad)
    dm.setup("test")
    data = dm.datasets["eval"]
    assert max(e["n_windows"] for e in data) >= 2
    results = []
    for size in (1, len(data)):
        with torch.no_grad():
            for i in range(0, len(data), size):
                batch = dm.collate(data[i:i + size])
                module.update_metrics("test", batch, module(batch))
        results.append(module.metrics_for("test"))
    assert results[0] == pytest.approx(results[1], abs=1e-4)


def test_init_from_mlm_takes_backbone_not_head_and_qa_takes_both(encoder, qa_run, squad, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(f"the {w} is near the {v}" for w in WORDS for v in WORDS[:3]), encoding="utf-8")
    mlm_run = tmp_path / "mlm"
    mlm_flags = [a for i, a in enumerate(SMALL) if "--doc-stride" not in SMALL[max(0, i - 1):i + 1]]  # a qa flag
    main(["train", "mlm", "--model", encoder, "--train", str(docs), "--out", str(mlm_run), "--whole-word-mask",
          *mlm_flags])
    mlm_weights = load_file(str(mlm_run / "weights.safetensors"))
    assert any(k.startswith("head.") for k in mlm_weights) and json.loads((mlm_run / "metrics.json").read_text())["val_perplexity"] > 1

    opts = Options(lora=False)
    fresh = build_module("qa", encoder, opts, {})
    head_before = {k: v.clone() for k, v in fresh.head.state_dict().items()}
    apply_init_run(fresh, str(mlm_run))
    own = fresh.state_dict()
    for key, value in mlm_weights.items():
        if key.startswith("backbone."):
            torch.testing.assert_close(own[key], value)
    for key, value in fresh.head.state_dict().items():
        torch.testing.assert_close(value, head_before[key])  # the MLM head was not loaded into the span head

    # a head-only step after the full mlm step saves only its head: loading it must re-apply the mlm backbone
    head_only = tmp_path / "head_only"
    main(["train", "qa", "--model", encoder, "--init", str(mlm_run), "--train", squad, "--out", str(head_only),
          "--freeze", "backbone", "--dtype", "float32", *SMALL])  # float32: the frozen backbone keeps mlm's values
    assert all(k.startswith("head.") for k in load_file(str(head_only / "weights.safetensors")))
    reloaded = run_module(str(head_only))
    torch.testing.assert_close(reloaded.backbone.layers[0].attn.q_proj.weight,
                               mlm_weights["backbone.layers.0.attn.q_proj.weight"])

    chained = build_module("qa", encoder, opts, {})
    apply_init_run(chained, qa_run)
    qa_weights = load_file(f"{qa_run}/weights.safetensors")
    torch.testing.assert_close(chained.head.qa_outputs.weight, qa_weights["head.qa_outputs.weight"])


def test_bad_qa_file_is_one_line_error(encoder, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "the cat sat", "qas": [
        {"id": "q-17", "question": "who?", "answers": [{"text": "cat", "answer_start": 0}]}]}]}]}), encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["train", "qa", "--model", encoder, "--train", str(bad), "--out", str(tmp_path / "r"), *SMALL])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "question q-17: answer_start 0 does not match" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_lora_init_continues_the_same_adapter(encoder, squad, tmp_path):
    lora = [a for a in SMALL if a != "--full"] + ["--lora-r", "4"]
    first = tmp_path / "lora1"
    main(["train", "qa", "--model", encoder, "--train", squad, "--out", str(first), *lora])
    saved = load_file(str(first / "weights.safetensors"))
    key = "backbone.layers.0.attn.q_proj.lora_B"
    assert key in saved and saved[key].abs().sum() > 0  # trained (B starts at zero)
    second = build_module("qa", encoder, Options(lora_r=4), {})
    apply_init_run(second, str(first))
    torch.testing.assert_close(second.state_dict()[key], saved[key])
    torch.testing.assert_close(second.head.qa_outputs.weight, saved["head.qa_outputs.weight"])
