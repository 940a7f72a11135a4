"""instruct data: loss only on responses (+ EOS), Alpaca / custom / chat templates, packing, and bad input."""

from __future__ import annotations

import json

import pytest

from lightft import LightftError, load_tokenizer
from lightft.data.instruct import InstructDataModule
from lightft.prompts import ALPACA_NO_INPUT, format_prompt
from lightft.options import Options
from tiny_decoder import SIMPLE_CHAT, tiny_decoder

RECORDS = [{"instruction": "Say yes", "input": "", "output": "yes"},
           {"instruction": "Add", "input": "1 and 2", "output": "3"}]


def _write(tmp_path, records, name="data.jsonl"):
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _dm(model, data, **opts):
    o = Options(cache=False, val_fraction=0.0, max_length=opts.pop("max_length", 512), **opts)
    dm = InstructDataModule(load_tokenizer(model), o, train_file=str(data))
    dm.setup("fit")
    return dm


def _labelled_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100], skip_special_tokens=False)


def test_alpaca_labels_cover_response_and_eos_only(tmp_path):
    model = tiny_decoder(tmp_path, "gpt2")
    tok = load_tokenizer(model)
    dm = _dm(model, _write(tmp_path, RECORDS, "data.json"))
    assert dm.template == "alpaca"  # no chat template in this tokenizer
    ex = dm.datasets["train"][0]
    assert tok.decode(ex["input_ids"], skip_special_tokens=False) == \
        ALPACA_NO_INPUT.replace("{instruction}", "Say yes") + "yes</s>"
    assert _labelled_text(tok, ex) == "yes</s>"
    assert "### Input:\n1 and 2" in tok.decode(dm.datasets["train"][1]["input_ids"])
    everything = _dm(model, _write(tmp_path, RECORDS), train_on_inputs=True).datasets["train"][0]
    assert all(lab != -100 for lab in everything["labels"])


def test_custom_template(tmp_path):
    model = tiny_decoder(tmp_path, "gpt2")
    tok = load_tokenizer(model)
    dm = _dm(model, _write(tmp_path, RECORDS), template="Q: {instruction} {input}\nA: ")
    assert tok.decode(dm.datasets["train"][1]["input_ids"]) == "Q: Add 1 and 2\nA: 3"
    with pytest.raises(LightftError, match="instruction"):
        _dm(model, _write(tmp_path, RECORDS), template="no placeholder")


def test_chat_template_and_messages(tmp_path):
    model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
    tok = load_tokenizer(model)
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                          {"role": "assistant", "content": "Ciao"}]}]
    dm = _dm(model, _write(tmp_path, chat + RECORDS))
    assert dm.template == "chat"
    multi = dm.datasets["train"][0]
    assert tok.decode(multi["input_ids"], skip_special_tokens=False) == \
        "<|system|>Be brief.</s>\n<|user|>Hi</s>\n<|assistant|>Hello</s>\n<|user|>Bye</s>\n<|assistant|>Ciao</s>"
    assert _labelled_text(tok, multi) == "Hello</s>Ciao</s>"
    alpaca = dm.datasets["train"][1]
    assert tok.decode(alpaca["input_ids"], skip_special_tokens=False).startswith(
        format_prompt(tok, "chat", "Say yes"))
    assert _labelled_text(tok, alpaca) == "yes</s>"
    forced = _dm(model, _write(tmp_path, chat), template="alpaca").datasets["train"][0]
    assert _labelled_text(tok, forced) == "Hello</s>Ciao</s>"


def test_packing_keeps_examples_apart(tmp_path):
    model = tiny_decoder(tmp_path, "gpt2")
    data = _write(tmp_path, RECORDS * 4)
    plain = _dm(model, data, max_length=400)
    packed = _dm(model, data, max_length=400, packing=True)
    assert len(packed.datasets["train"]) < len(plain.datasets["train"])
    row = packed.datasets["train"][0]
    assert row["segment_ids"][-1] > 1 and row["position_ids"].count(0) == row["segment_ids"][-1]
    batch = packed.collate(packed.datasets["train"])
    assert "segment_ids" in batch  # the model masks attention across examples
    labelled = sum(sum(lab != -100 for lab in e["labels"][1:]) for e in plain.datasets["train"])
    assert int((batch["labels"][:, 1:] != -100).sum()) == labelled  # same response tokens either way


@pytest.mark.parametrize("record, message", [
    ({"input": "", "output": "x"}, r"data.jsonl:2: missing field 'instruction'"),
    ({"instruction": "x", "input": ""}, r"data.jsonl:2: missing field 'output'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, r"data.jsonl:2: no assistant message"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, r"data.jsonl:2: each message needs a role"),
])
def test_bad_records_name_file_and_line(tmp_path, record, message):
    model = tiny_decoder(tmp_path, "gpt2")
    with pytest.raises(LightftError, match=message):
        _dm(model, _write(tmp_path, [RECORDS[0], record]))


def test_empty_responses_are_skipped_and_reported(tmp_path, capsys):
    model = tiny_decoder(tmp_path, "gpt2")
    empty = [{"instruction": "x", "output": "  "}, {"messages": [{"role": "user", "content": "hi"},
                                                                 {"role": "assistant", "content": ""}]}]
    dm = _dm(model, _write(tmp_path, [RECORDS[0], *empty, RECORDS[1]]))
    assert len(dm.datasets["train"]) == 2 and dm.stats["train"]["empty_response"] == 2
    err = capsys.readouterr().err
    assert "data.jsonl:2: empty 'output'" in err and "data.jsonl:3: empty assistant message" in err


def test_overlong_examples_are_counted(tmp_path, capsys):
    model = tiny_decoder(tmp_path, "gpt2")
    long = {"instruction": "Repeat", "input": "", "output": "word " * 200}
    data = _write(tmp_path, [RECORDS[0], long, RECORDS[1]])
    dm = _dm(model, data, max_length=300)  # default --overlong truncate
    assert dm.stats["train"]["overlong"] == 1 and dm.stats["train"]["truncated"] == 1
    assert max(len(e["input_ids"]) for e in dm.datasets["train"]) == 300
    assert "overlong=1" in capsys.readouterr().err
    dropped = _dm(model, data, max_length=300, overlong="drop")
    assert len(dropped.datasets["train"]) == 2 and dropped.stats["train"]["dropped"] == 1
    with pytest.raises(LightftError, match=r"data.jsonl:2: example has \d+ tokens, over --max-length 300"):
        _dm(model, data, max_length=300, overlong="error")
    tiny = _dm(model, data, max_length=150)  # the prompt alone fills the row: no response left
    assert tiny.stats["train"]["dropped_no_response_left"] == 1
