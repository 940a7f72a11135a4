"""GGUF export (lightft/gguf_export.py, `lightft export RUN --gguf`): GGUF in -> fine-tune -> GGUF out.

A tiny llama written as GGUF is converted, fine-tuned with LoRA (and with QLoRA + DoRA), exported
as GGUF, and read back by `lightft convert gguf` and by `transformers`' own GGUF loader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightft import load_model, load_tokenizer
from lightft.cli.main import cli, main
from lightft.errors import LightftError
from lightft.lora import merge_lora

gguf = pytest.importorskip("gguf")
from lightft.cli.convert import convert_gguf  # noqa: E402
from lightft.gguf import unpermute_qk  # noqa: E402
from lightft.gguf_export import permute_qk  # noqa: E402
from test_gguf import byte_level_vocab, write_gguf  # noqa: E402

FAST = ["--max-steps", "3", "--batch-size", "4", "--no-progress", "--no-cache", "--lr", "5e-2", "--max-length", "48"]
# The exported file must hold the run's merged weights rounded to the chosen type, nothing else: its logits are
# compared with those of the run's weights rounded the same way in memory (`_rounded_like_the_file`), to within
# 1e-5 of the largest logit (fp32 arithmetic in a different order). How much the rounding itself moves the logits
# depends on the trained weights, not on the exporter: on this tiny random model after 3 steps at lr 5e-2,
# bf16 storage alone moved them by 2e-3 to 0.12 depending on the dropout masks drawn, so a fixed bound per type
# tested the training run more than the export.
TOLERANCE = 1e-5


def _train(base, data, out, *extra):
    res = CliRunner().invoke(cli, ["train", "instruct", "--model", str(base), "--train", str(data), "--out", str(out),
                                   "--lora-targets", "all-linear", *extra, *FAST, "--precision", "32-true",
                                   "--no-group-by-length"], catch_exceptions=False)
    # fp32 weights, so that the f32 export can be compared with the run itself (see TOLERANCE)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import tiny_hf_model

    root = tmp_path_factory.mktemp("gguf_export")
    tokens, _, _ = byte_level_vocab()
    hf = tiny_hf_model("llama", vocab_size=len(tokens), hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96)
    base = convert_gguf(write_gguf(root / "in.gguf", hf), root / "base")
    data = root / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"what is the {w}", "input": "", "output": f"the {w} sat"}
                                for w in ["cat", "mat", "world", "capital"] * 3]))
    lora = _train(base, data, root / "lora")
    qdora = _train(base, data, root / "qdora", "--quantize", "nf4", "--dora")
    return root, base, {"lora": lora, "qdora": qdora}


def _merged_backbone(run):
    from lightft.runs import load_run

    return merge_lora(load_run(str(run)).backbone).eval()


def _rounded_like_the_file(model, kind):
    """A copy of `model` with every weight of 2+ dimensions stored in `kind` and read back (as the exporter
    encodes it: `gguf_export._encode`, decoded by the gguf package); 1-D weights stay f32, as in the file."""
    import copy

    from gguf.quants import dequantize

    from lightft.gguf_export import _encode

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for p in rounded.parameters():
            if p.ndim >= 2:
                data, qtype = _encode(p, kind)
                p.copy_(torch.from_numpy(np.asarray(dequantize(data, qtype), dtype=np.float32)).view(p.shape))
    return rounded


def _export(run, out, *extra):
    res = CliRunner().invoke(cli, ["export", str(run), "--gguf", str(out), *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_permutation_is_the_inverse_of_the_importers():
    w = torch.arange(48 * 5, dtype=torch.float32).view(48, 5)
    assert not torch.equal(permute_qk(w, 4), w)
    assert torch.equal(unpermute_qk(permute_qk(w, 4), 4), w)
    assert torch.equal(unpermute_qk(permute_qk(w[:, 0], 4), 4), w[:, 0])  # biases too


@pytest.mark.parametrize("run_name, kind", [("lora", "f32"), ("lora", "f16"), ("lora", "bf16"), ("lora", "q8_0"),
                                            ("lora", "q4_1"), ("qdora", "f32")])
def test_round_trip_gives_the_runs_logits(runs, run_name, kind):
    root, base, by_name = runs
    path = _export(by_name[run_name], root / f"{run_name}-{kind}.gguf", "--type", kind)
    back = load_model(convert_gguf(path, root / f"{run_name}-{kind}-back"))
    ours = _merged_backbone(by_name[run_name])
    ids = torch.randint(0, ours.cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = _rounded_like_the_file(ours, kind)(ids).logits, back(ids).logits
        exact = ours(ids).logits
    assert (got - want).abs().max() <= TOLERANCE * want.abs().max()
    assert kind == "f32" or (got - exact).abs().max() > 0  # the type's rounding is really in the file
    if kind == "f32":  # GGUF in -> fine-tune -> GGUF out: the weights really changed
        with torch.no_grad():
            assert (load_model(base)(ids).logits - want).abs().max() > 1e-3
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert json.loads((root / f"{run_name}-{kind}-back" / name).read_text()) == \
            json.loads((base / name).read_text()), name


def test_transformers_reads_the_export_with_the_same_greedy_tokens(runs):
    transformers = pytest.importorskip("transformers")
    from lightft.generate import SamplingOptions, generate_ids

    root, base, by_name = runs
    path = _export(by_name["lora"], root / "hf-check.gguf", "--type", "f32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    tok = load_tokenizer(base)
    prompt = tok.encode("<|im_start|>user\nwhat is the cat<|im_end|>\n")
    ours = generate_ids(_merged_backbone(by_name["lora"]), [prompt], SamplingOptions(max_new_tokens=8), eos=set())
    ids = torch.tensor([prompt])
    with torch.no_grad():  # greedy, without stopping at EOS (generate's min_new_tokens would forbid EOS instead)
        for _ in range(8):
            ids = torch.cat([ids, ref(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert ours[0].token_ids == ids[0, len(prompt):].tolist()


def _fails(argv, capsys, message):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_bad_exports_write_nothing(runs, tmp_path, capsys):
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    _, _, by_name = runs
    run = str(by_name["lora"])
    target = tmp_path / "x.gguf"
    _fails(["export", run, "--gguf", str(target), "--type", "q4_k"], capsys, "Invalid value for '--type'")
    _fails(["export", run, "--out", str(tmp_path / "d"), "--type", "q8_0"], capsys, "use it with --gguf")
    _fails(["export", run, "--gguf", str(target), "--adapter"], capsys, "--gguf writes merged weights")
    _fails(["export", run], capsys, "give exactly one of --out DIR")
    bert = make_tiny_model(tmp_path / "bert")
    res = CliRunner().invoke(cli, ["train", "classify", "--model", str(bert), "--train",
                                   str(write_classify_jsonl(tmp_path / "t.jsonl", 16)), "--out", str(tmp_path / "b"),
                                   "--max-steps", "1", "--no-progress", "--no-cache"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    _fails(["export", str(tmp_path / "b"), "--gguf", str(target)], capsys,
           "GGUF export writes llama-family models (llama, mistral, qwen2); this is a bert model")
    assert not target.exists() and not list(tmp_path.glob(".x.gguf*"))  # no file, no temporary left behind
    target.write_bytes(b"keep me")
    _fails(["export", run, "--gguf", str(target)], capsys, "already exists; choose another --gguf file or add --force")
    assert target.read_bytes() == b"keep me"


def test_a_failure_while_writing_leaves_no_file(runs, tmp_path, monkeypatch):
    """An error after the writer started (here: in the middle of the tensors) removes the temporary file."""
    import lightft.gguf_export as export

    _, _, by_name = runs
    calls = {"n": 0}
    real = export._encode

    def failing(w, kind):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (simulated)")
        return real(w, kind)

    monkeypatch.setattr(export, "_encode", failing)
    with pytest.raises(LightftError, match=r"cannot write \(disk full \(simulated\)\); nothing was replaced"):
        _export(by_name["lora"], tmp_path / "y.gguf")
    assert list(tmp_path.iterdir()) == []


def test_sentencepiece_tokenizer_metadata_round_trip(tmp_path):
    """A SentencePiece BPE vocabulary: scores written from the merge order give back the same tokenizer."""
    from lightft.gguf_tokenizer import tokenizer_files, tokenizer_metadata

    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "▁hell", "▁hello", "▁w", "or", "▁wor", "ld",
              "▁world"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces))],
            "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(pieces),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    for name, data in tokenizer_files(meta, tmp_path / "x.gguf").items():
        (tmp_path / name).write_text(json.dumps(data))
    again = tmp_path / "again"
    again.mkdir()
    back = tokenizer_metadata(tmp_path, len(tokens) + 3)  # 3 padding rows in the model
    assert back["tokenizer.ggml.tokens"][-3:] == ["[PAD277]", "[PAD278]", "[PAD279]"]
    assert back["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]
    for name, data in tokenizer_files(back, tmp_path / "y.gguf").items():
        (again / name).write_text(json.dumps(data))
    text = "hello world é hell"
    assert load_tokenizer(again).encode(text) == load_tokenizer(tmp_path).encode(text)
