"""Merged exports load as transformers task models (the real classes and pipelines give lightft's outputs),
heads without an exact class are kept in lightft_head.safetensors, and every head reads back into lightft."""

from __future__ import annotations

import json

import pytest
import torch

from lightft.cli.export import export_trained
from lightft.options import Options
from lightft.task_heads import HEAD_FILE, TASK_FILE, read_task_head
from tests.tiny_run import make_tiny_model

transformers = pytest.importorskip("transformers")

LABELS = ["neg", "pos", "zero"]
TAGS = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]


def build(tmp_path, family: str, task: str, lora: bool = True, **task_args):
    """A task module on a tiny random model with random LoRA factors and head (nothing is zero)."""
    from lightft.train.run import build_module

    base = make_tiny_model(tmp_path / family, family)
    opts = Options(lora=lora, lora_targets="q,v", lora_r=2, pooling=task_args.pop("pooling", "auto"),
                   precision="32-true")  # fp32: logits are compared with transformers' to 1e-5
    module = build_module(task, str(base), opts, task_args)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(std=0.5)
    return module.eval(), base


def export(module, base, out):
    lines: list[str] = []
    head = {k.removeprefix("head."): v for k, v in module.state_dict().items() if k.startswith("head.")}
    export_trained(module.backbone, head, module.task, module.task_state(), str(base), str(out), adapter=False,
                   dtype=None, force=False, say=lines.append)
    return lines


def batch(module, pad_id: int = 0):
    """Two right-padded rows of ordinary tokens (ids 5..24 of the tiny word-level vocabulary)."""
    torch.manual_seed(2)
    ids = torch.randint(5, 25, (2, 7))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = pad_id, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def hf_inputs(b, family):
    keys = ("input_ids", "attention_mask") + (("token_type_ids",) if family in ("bert",) else ())
    return {k: b[k] for k in keys}


@pytest.mark.parametrize("family,auto", [("bert", "AutoModelForSequenceClassification"),
                                         ("roberta", "AutoModelForSequenceClassification"),
                                         ("gpt2", "AutoModelForSequenceClassification"),
                                         ("llama", "AutoModelForSequenceClassification")])
def test_classify_export_is_the_transformers_sequence_classifier(tmp_path, family, auto):
    module, base = build(tmp_path, family, "classify", label_names=LABELS)
    out = tmp_path / "export"
    lines = export(module, base, out)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos", "2": "zero"} and config["label2id"]["zero"] == 2
    assert not (out / HEAD_FILE).exists() and "loads in transformers with its head" in lines[0]
    pad = 1 if family == "roberta" else 0
    b = batch(module, pad)
    hf = getattr(transformers, auto).from_pretrained(out).eval()
    assert type(hf).__name__ == config["architectures"][0]
    with torch.no_grad():
        expected = hf(**hf_inputs(b, family)).logits
        ours = module(b)["logits"]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    if family in ("gpt2", "llama"):
        assert config["pad_token_id"] == 0 and "head.out.bias" not in module.state_dict()  # score has no bias


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_ner_export_is_the_transformers_token_classifier(tmp_path, family):
    module, base = build(tmp_path, family, "ner", label_names=TAGS)
    out = tmp_path / "export"
    export(module, base, out)
    hf = transformers.AutoModelForTokenClassification.from_pretrained(out).eval()
    b = batch(module)
    with torch.no_grad():
        expected = hf(**hf_inputs(b, family)).logits
        ours = module(b)["logits"]
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(ours[keep], expected[keep], rtol=1e-5, atol=1e-5)
    assert hf.config.id2label[4] == "O"


def test_qa_export_is_the_transformers_span_model(tmp_path):
    module, base = build(tmp_path, "bert", "qa")
    out = tmp_path / "export"
    export(module, base, out)
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(out).eval()
    b = batch(module)
    with torch.no_grad():
        expected = hf(**hf_inputs(b, "bert"))
        ours = module(b)
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(ours["start_logits"][keep], expected.start_logits[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["end_logits"][keep], expected.end_logits[keep], rtol=1e-5, atol=1e-5)
    assert not any(k.startswith("bert.pooler") for k in _keys(out))  # the QA class has no pooler


def test_mlm_export_is_bert_for_masked_lm(tmp_path):
    module, base = build(tmp_path, "bert", "mlm", lora=False, model_dir=None)
    out = tmp_path / "export"
    export(module, base, out)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    b = batch(module)
    with torch.no_grad():
        expected = hf(**hf_inputs(b, "bert")).logits
        hidden = module.backbone(b["input_ids"], attention_mask=b["attention_mask"]).hidden_states
        ours = module.head(hidden, module.backbone.embed_tokens.weight)
    keep = b["attention_mask"].bool()
    torch.testing.assert_close(ours[keep], expected[keep], rtol=1e-5, atol=1e-5)


def test_lm_export_is_the_causal_lm(tmp_path):
    module, base = build(tmp_path, "llama", "lm")
    out = tmp_path / "export"
    export(module, base, out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(5, 25, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(module.backbone(ids).logits, hf(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    assert json.loads((out / TASK_FILE).read_text())["task"] == "lm"


def test_pipelines_give_lightfts_predictions(tmp_path):
    module, base = build(tmp_path, "bert", "classify", label_names=LABELS)
    out = tmp_path / "export"
    export(module, base, out)
    text = "the movie was really good"
    from lightft.tokenizer import load_tokenizer

    ids = torch.tensor([load_tokenizer(base).encode(text)])
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        probs = module(b)["logits"].softmax(-1)[0]
    got = transformers.pipeline("text-classification", model=str(out), top_k=None)(text)
    scores = {r["label"]: r["score"] for r in (got[0] if isinstance(got[0], list) else got)}
    assert scores.keys() == set(LABELS)
    for i, name in enumerate(LABELS):
        assert abs(scores[name] - float(probs[i])) < 1e-5

    ner, nbase = build(tmp_path / "ner", "bert", "ner", label_names=TAGS)
    nout = tmp_path / "ner_export"
    export(ner, nbase, nout)
    with torch.no_grad():
        tags = [TAGS[i] for i in ner(b)["logits"][0].argmax(-1).tolist()[1:-1]]  # without [CLS] / [SEP]
    tokens = transformers.pipeline("token-classification", model=str(nout), ignore_labels=[])(text)
    assert [t["entity"] for t in tokens] == tags


def test_head_without_a_class_is_kept_in_the_lightft_head_file(tmp_path):
    module, base = build(tmp_path, "bert", "classify", label_names=LABELS, pooling="mean")
    out = tmp_path / "export"
    lines = export(module, base, out)
    assert len(lines) == 1 and "pools with 'pooler', and this run pooled with 'mean'" in lines[0]
    assert HEAD_FILE in lines[0]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and "id2label" not in config
    transformers.AutoModel.from_pretrained(out)  # the backbone still loads
    saved = read_task_head(out)
    assert saved.task == "classify" and saved.task_state["pooling"] == "mean"
    for k, v in saved.tensors.items():
        torch.testing.assert_close(v, module.state_dict()[k], rtol=0, atol=0)


@pytest.mark.parametrize("family,task,extra", [("bert", "classify", {"label_names": LABELS}),
                                               ("roberta", "classify", {"label_names": LABELS}),
                                               ("gpt2", "classify", {"label_names": LABELS}),
                                               ("bert", "ner", {"label_names": TAGS}),
                                               ("bert", "qa", {}),
                                               ("bert", "classify", {"label_names": LABELS, "pooling": "cls"})])
def test_exported_head_reads_back_into_the_same_module(tmp_path, family, task, extra):
    """What eval / predict of an export do: its backbone + read_task_head rebuild the trained module exactly."""
    from lightft.evaluate import export_module

    module, base = build(tmp_path, family, task, **extra)
    out = tmp_path / "export"
    export(module, base, out)
    saved = read_task_head(out)
    assert saved is not None and saved.task == task
    assert saved.task_state == module.task_state()
    rebuilt = export_module(str(out), task, Options(lora=False))
    b = batch(module, 1 if family == "roberta" else 0)
    with torch.no_grad():
        for key, value in module(b).items():
            torch.testing.assert_close(rebuilt(b)[key], value, rtol=1e-5, atol=1e-5)


def test_head_of_a_foreign_task_checkpoint_reads_from_its_config(tmp_path):
    """A BertForSequenceClassification saved by transformers: labels from id2label, pooler pooling."""
    from tests.conftest import save_hf

    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, id2label={0: "bad", 1: "good"})
    hf = transformers.BertForSequenceClassification(cfg)
    save_hf(hf, tmp_path / "m")
    saved = read_task_head(tmp_path / "m")
    assert saved.task == "classify" and saved.task_state == {"label_names": ["bad", "good"], "pooling": "pooler",
                                                             "head_bias": True}
    torch.testing.assert_close(saved.tensors["head.out.weight"], hf.classifier.weight.detach())
    assert read_task_head(make_tiny_model(tmp_path / "plain")) is None  # a BertModel has no task head


def _keys(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


@pytest.mark.slow
def test_real_minilm_run_export_pipeline_matches_lightft_predict(tmp_path):
    """MiniLM fine-tuned a few steps on the shipped sentiment set: the merged export in transformers'
    text-classification pipeline gives `lightft predict`'s labels and probabilities."""
    from conftest import minilm_dir
    from tests.tiny_run import REPO, run_cli

    minilm_dir()
    demo = REPO / "lightft" / "demo"
    data = tmp_path / "v.jsonl"
    data.write_text("".join((demo / "sentiment_validation.jsonl").read_text().splitlines(True)[:16]))
    run, out = tmp_path / "run", tmp_path / "export"
    for args in (["train", "classify", "--model", "minilm", "--train", demo / "sentiment_train.jsonl", "--val", data,
                  "--out", run, "--full", "--max-steps", "3", "--no-progress", "--threads", "1",
                  "--precision", "32-true"],  # fp32 like the pipeline below (auto is bf16 on AMX CPUs)
                 ["export", run, "--out", out, "--threads", "1"]):
        res = run_cli(args, tmp_path / "cache", timeout=900)
        assert res.returncode == 0, res.stderr[-2000:]
    res = run_cli(["predict", "classify", "--model", run, "--data", data, "--precision", "32-true", "--dtype",
                   "float32"], tmp_path / "cache", timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    ours = [json.loads(line) for line in res.stdout.splitlines()]
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    theirs = transformers.pipeline("text-classification", model=str(out), top_k=None)(texts)
    assert len(ours) == len(theirs) == 16
    for mine, other in zip(ours, theirs):
        scores = {r["label"]: r["score"] for r in other}
        assert max(scores, key=scores.get) == mine["label"]
        assert all(abs(scores[k] - v) < 1e-5 for k, v in mine["probabilities"].items())
