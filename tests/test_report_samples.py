"""samples.json for every task: the first validation examples as text, gold next to the model's output."""

from __future__ import annotations

import json

import pytest

from lightft.options import Options
from lightft.tokenizer import load_tokenizer
from lightft.train.registry import get_task
from lightft.train.report_files import collect_samples
from lightft.train.run import build_module
from supervised_utils import NER_SENTENCES, conll_text, tiny_bert_dir, write_lines
from tiny_decoder import SIMPLE_CHAT, tiny_decoder


def _data(task: str, tmp_path):
    """(model folder, data file, options) of a tiny case per task."""
    if task in ("lm", "instruct"):
        model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
        if task == "lm":
            text = "\n".join(f"Document {i} talks about fever." for i in range(12))
            return model, write_lines(tmp_path / "corpus.txt", [text]), {"doc_per_line": True}
        records = [{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 4]
        return model, write_lines(tmp_path / "it.jsonl", records), {}
    model = tiny_bert_dir(tmp_path / "bert")
    if task == "ner":
        path = tmp_path / "ner.txt"
        path.write_text(conll_text(NER_SENTENCES), encoding="utf-8")
        return model, path, {}
    if task == "mlm":
        return model, write_lines(tmp_path / "mlm.txt", ["john smith lives in paris and works at acme corp"] * 6), {}
    context = "john smith lives in paris . acme corp is good . the food was great and the film was bad ."
    qas = [{"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i, (q, a) in enumerate([("who lives in paris", "john smith"), ("what is good", "acme corp")])]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8")
    return model, path, {"max_length": 24, "doc_stride": 6}


@pytest.mark.parametrize("task", ["ner", "qa", "mlm", "lm", "instruct"])
def test_samples_of_every_task(task, tmp_path):
    model_dir, data, extra = _data(task, tmp_path)
    opts = Options(train=str(data), val=str(data), cache=False, lora=False, **{"max_length": 64, **extra})
    tok = load_tokenizer(model_dir)
    dm = get_task(task).datamodule(tok, opts, train_file=str(data), val_file=str(data))
    dm.setup("fit")
    module = build_module(task, str(model_dir), opts, dm.task_args())
    record = collect_samples(module, dm, tok)
    samples = record["samples"]
    assert record["what"] and samples and len(samples) <= 6
    for s in samples:
        assert all(isinstance(s[k], str) and s[k] for k in ("input", "gold", "predicted")), s
    if task == "ner":
        assert samples[0]["gold"] == "john smith (PER); paris (LOC)"  # entities rebuilt from the gold tags
    if task == "qa":
        assert [s["gold"] for s in samples] == ["john smith", "acme corp"]  # one line per question, not per window
        assert all(s["predicted"] in (dm.datasets["val"][0]["context"]) for s in samples)
    if task == "mlm":
        assert all(len(s["gold"].split()) == len(s["predicted"].split()) >= 1 for s in samples)
    if task == "instruct":
        assert samples[0]["gold"] == "yes</s>"  # the response and the EOS the model must learn to emit
        assert samples[0]["input"].endswith("<|assistant|>")
