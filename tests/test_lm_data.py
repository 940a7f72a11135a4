"""lm data: documents -> EOS-closed tokens -> packed rows; a packed batch scores each document as if alone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lightft import LightftError, load_model, load_tokenizer
from lightft.data.lm import LMDataModule
from lightft.data.packing import pack_rows
from lightft.options import Options
from lightft.tasks.causal_lm import CausalLMModule, next_token_nll
from tiny_decoder import tiny_decoder

DOCS = ["The cat sat on the mat.", "Aspirin lowers fever.", "A much longer third document, which will not fit in "
        "one row of the packed batch and so continues.", "Short."]


def _dm(path, data, **opts):
    o = Options(max_length=opts.pop("max_length", 48), cache=False, val_fraction=opts.pop("val_fraction", 0.0),
                **opts)
    dm = LMDataModule(load_tokenizer(path), o, train_file=str(data))
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_rows_score_documents_as_if_alone(tmp_path, family):
    path = tiny_decoder(tmp_path, family)
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    dm = _dm(path, data, doc_per_line=True, max_length=48)
    rows = dm.datasets["train"]
    assert all(len(r["input_ids"]) <= 48 for r in rows)
    assert max(r["segment_ids"][-1] for r in rows) > 1  # several documents share a row
    model = load_model(path)
    batch = dm.collate(rows)
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"],
                       segment_ids=batch.get("segment_ids")).logits
    token_nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none",
                                ignore_index=-100)  # (B, T-1)
    # every packed piece (one segment of one row) equals that piece of text run on its own
    for r, row in enumerate(rows):
        seg = torch.tensor(row["segment_ids"])
        for s in seg.unique().tolist():
            where = (seg == s).nonzero().flatten()
            ids = batch["input_ids"][r, where][None]
            with torch.no_grad():
                alone = model(ids).logits
            expected = F.cross_entropy(alone[0, :-1], ids[0, 1:], reduction="none")
            got = token_nll[r, where[:-1]]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the module's chunked loss is the token-weighted mean of the same numbers
    module = CausalLMModule(model, Options())
    out = module(batch)
    n = (batch["labels"][:, 1:] != -100).sum()
    torch.testing.assert_close(out["nll_sum"] / n, token_nll.sum() / n, rtol=1e-5, atol=1e-5)


def test_document_boundaries_and_eos(tmp_path):
    path = tiny_decoder(tmp_path, "gpt2")
    tok = load_tokenizer(path)
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:2]), encoding="utf-8")
    row = _dm(path, data, max_length=200).datasets["train"][0]
    first = len(tok.encode(DOCS[0])) + 1
    assert row["input_ids"][first - 1] == tok.eos_id and row["input_ids"][-1] == tok.eos_id
    assert row["position_ids"][first] == 0 and row["segment_ids"][first] == 2
    assert row["labels"][first] == -100  # EOS of document 1 never predicts document 2


def test_pack_rows_split_long_or_not():
    ex = [{"input_ids": [1] * 5, "labels": [1] * 5}, {"input_ids": [2] * 4, "labels": [2] * 4}]
    stream = pack_rows(ex, 6, split_long=True)
    assert [len(r["input_ids"]) for r in stream] == [6, 3]
    assert stream[1]["position_ids"] == [0, 1, 2]
    whole = pack_rows(ex, 6, split_long=False)
    assert [r["input_ids"] for r in whole] == [[1] * 5, [2] * 4]


def test_folder_split_by_document(tmp_path):
    path = tiny_decoder(tmp_path, "gpt2")
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, d in enumerate(DOCS * 3):
        (folder / ("sub" if i % 2 else ".") / f"d{i}.txt").write_text(d, encoding="utf-8")
    (folder / "notes.csv").write_text("ignored", encoding="utf-8")
    dm = _dm(path, folder, val_fraction=0.25, max_length=32)
    assert dm.stats["train"]["documents"] == 12 and dm.stats["train"]["files"] == 12
    assert dm.datasets["val"] and dm.datasets["train"]


def test_bad_text_files(tmp_path):
    path = tiny_decoder(tmp_path, "gpt2")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(LightftError, match="binary"):
        _dm(path, binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(LightftError, match="not UTF-8"):
        _dm(path, latin)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LightftError, match="no .txt or .jsonl"):
        _dm(path, empty)
    one = tmp_path / "one.txt"
    one.write_text("a single document", encoding="utf-8")
    with pytest.raises(LightftError, match="too few examples"):
        _dm(path, one, val_fraction=0.1)


def test_chunked_loss_matches_full_logits():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden = torch.randn(2, 7, 8, requires_grad=True)
    labels = torch.randint(0, 30, (2, 7))
    labels[0, :3] = -100
    nll, n = next_token_nll(head, hidden, labels, chunk=3)
    expected = F.cross_entropy(head(hidden)[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                               reduction="sum")
    torch.testing.assert_close(nll, expected)
    assert int(n) == int((labels[:, 1:] != -100).sum())
    g1 = torch.autograd.grad(nll, hidden)[0]
    g2 = torch.autograd.grad(expected, hidden)[0]
    torch.testing.assert_close(g1, g2)


def test_metric_sums_stay_float32_under_bf16_true(tmp_path):
    """Lightning's bf16-true casts the whole module; the token-loss sums must not round to bf16 with it."""
    from lightning.pytorch.plugins.precision import HalfPrecision

    module = HalfPrecision("bf16-true").convert_module(CausalLMModule(load_model(tiny_decoder(tmp_path, "llama")),
                                                                      Options()))
    assert next(module.backbone.parameters()).dtype == torch.bfloat16  # the weights were cast
    nll, tokens = module.metrics["val"]["nll"], module.metrics["val"]["tokens"]
    for _ in range(40):  # 40 batches of 1,000.3 nats over 333 tokens: bf16 would keep only ~3 digits of the sum
        nll.update(torch.tensor(1000.3, dtype=torch.bfloat16).float())
        tokens.update(torch.tensor(333.0))
    got = module.metrics_for("val")
    assert got["tokens"].dtype == torch.float32 and got["tokens"].item() == 13320
    torch.testing.assert_close(got["token_loss"], torch.tensor(40 * 1000.0 / 13320), rtol=1e-6, atol=0)
