"""GGUF conversion: a tiny random llama written as GGUF (mixed tensor types) converts back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightft import LightftError, load_model, load_tokenizer
from lightft.checkpoint import hf_state_dict

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from lightft.cli.convert import convert_gguf  # noqa: E402

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# GGUF name pattern -> type; the first layer keeps q/k unquantised so the row un-permutation is checked exactly
TYPES = {"token_embd": Q.Q8_0, "blk.0.attn_q": Q.F32, "blk.0.attn_k": Q.F16, "attn_q": Q.Q4_0, "attn_k": Q.Q4_1,
         "attn_v": Q.BF16, "attn_output": Q.Q5_0, "ffn_gate": Q.Q8_0, "ffn_up": Q.Q4_1, "ffn_down": Q.Q5_1,
         "output.": Q.Q4_0}
GGUF_NAMES = {"embed_tokens": "token_embd", "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
              "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "lm_head": "output",
              "model.norm": "output_norm"}


def byte_level_vocab():
    """A small byte-level BPE trained on a few sentences: (tokens, merges, token types)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat", "hello world, hello there", "what is the capital"] * 5, trainer)
    state = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["merges"]]
    types = [3 if t in SPECIALS else 1 for t in tokens]
    return tokens, merges, types


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows (written from its description, to test our inverse)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, hf_model, arch="llama", type_override=None, tokenizer="gpt2"):
    """Write `hf_model` (a transformers LlamaForCausalLM) as a llama.cpp-style GGUF file."""
    cfg = hf_model.config
    tokens, merges, types = byte_level_vocab()
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in [("block_count", cfg.num_hidden_layers), ("context_length", cfg.max_position_embeddings),
                       ("embedding_length", cfg.hidden_size), ("feed_forward_length", cfg.intermediate_size),
                       ("attention.head_count", cfg.num_attention_heads),
                       ("attention.head_count_kv", cfg.num_key_value_heads), ("vocab_size", cfg.vocab_size)]:
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.rope.freq_base", cfg.rope_parameters["rope_theta"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    w.add_tokenizer_model(tokenizer)
    w.add_string("tokenizer.ggml.pre", "gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_chat_template(TEMPLATE)
    for name, tensor in hf_model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        gname = name.replace("model.layers.", "blk.").replace("self_attn.", "").replace("mlp.", "")
        for hf_part, g_part in GGUF_NAMES.items():
            gname = gname.replace(hf_part, g_part)
        gname = gname.replace("model.", "")
        data = tensor.float().numpy()
        if "attn_q" in gname:
            data = llama_cpp_permute(data, cfg.num_attention_heads)
        elif "attn_k" in gname:
            data = llama_cpp_permute(data, cfg.num_key_value_heads)
        qtype = next((t for k, t in TYPES.items() if gname.startswith(k) or f".{k}." in gname), Q.F32)
        qtype = (type_override or {}).get(gname, qtype) if data.ndim == 2 else Q.F32
        if qtype == Q.F32:
            w.add_tensor(gname, np.ascontiguousarray(data))
        elif qtype == Q.F16:
            w.add_tensor(gname, data.astype(np.float16))
        else:
            w.add_tensor(gname, quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import tiny_hf_model

    tokens, _, _ = byte_level_vocab()
    hf = tiny_hf_model("llama", vocab_size=len(tokens), hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96)
    root = tmp_path_factory.mktemp("gguf")
    path = write_gguf(root / "tiny.gguf", hf)
    return hf, path, convert_gguf(path, root / "converted")


def test_weights_equal_dequantised_reference(tiny):
    hf, path, out = tiny
    ours = hf_state_dict(load_model(out))
    reader = gguf.GGUFReader(str(path))
    for t in reader.tensors:  # reference: dequantise the file ourselves, undo the permutation the writer did
        key = _hf_key(t.name)
        ref = dequantize(np.array(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        torch.testing.assert_close(ours[key], torch.from_numpy(_unpermute_ref(ref, key, hf.config)), rtol=0, atol=0)
    # unquantised layer-0 q (F32) and k (F16) must come back as the original weights
    sd = hf.state_dict()
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(ours[q], sd[q], rtol=0, atol=0)
    torch.testing.assert_close(ours[k], sd[k].half().float(), rtol=0, atol=0)


def _hf_key(gguf_name: str) -> str:
    from lightft.gguf import hf_name

    return hf_name(gguf_name)


def _unpermute_ref(ref: np.ndarray, key: str, cfg) -> np.ndarray:
    """Inverse of `llama_cpp_permute` by index search (an independent route to the same answer)."""
    if ".q_proj." not in key and ".k_proj." not in key:
        return ref
    heads = cfg.num_attention_heads if ".q_proj." in key else cfg.num_key_value_heads
    order = llama_cpp_permute(np.arange(ref.shape[0]), heads)  # row r of the file holds original row order[r]
    out = np.empty_like(ref)
    out[order] = ref
    return out


def test_config_and_logits_match_transformers_reading_the_gguf(tiny):
    transformers = pytest.importorskip("transformers")
    hf, path, out = tiny
    ours = load_model(out)
    assert ours.cfg.num_kv_heads == 2 and ours.cfg.tie_embeddings is False
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ids = torch.randint(0, hf.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-4)


def test_tokenizer_round_trip_and_specials(tiny):
    _, path, out = tiny
    tok = load_tokenizer(out)
    text = "hello world, what is the capital? café"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n"
    assert tok.encode(prompt)[0] == tok.bos_id  # control tokens stay whole
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert ref(text + prompt)["input_ids"] == tok.encode(text + prompt)


def test_cli_converts_and_refuses_non_empty_folder(tiny, tmp_path):
    from click.testing import CliRunner

    from lightft.cli.main import cli

    _, path, _ = tiny
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", "gguf", str(path), str(tmp_path / "m"), "--dtype", "bfloat16"])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "m", dtype=None).embed_tokens.weight.dtype == torch.float32  # caller's dtype wins
    assert next(iter(hf_state_dict(load_model(tmp_path / "m", dtype="bfloat16")).values())).dtype == torch.bfloat16
    with pytest.raises(LightftError, match="not empty"):
        convert_gguf(path, tmp_path / "m")
    convert_gguf(path, tmp_path / "m", force=True)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(
        [".lightft", "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
         "tokenizer_config.json"])


def test_convert_shows_progress_and_follows_the_umask(tiny, tmp_path):
    import os

    from click.testing import CliRunner

    from lightft.cli.main import cli

    _, path, _ = tiny
    old = os.umask(0o002)
    try:
        res = CliRunner().invoke(cli, ["convert", "gguf", str(path), str(tmp_path / "m")])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    n = len(list(gguf.GGUFReader(str(path)).tensors))
    assert f"[convert] tensors {n}/{n}" in res.stderr and f"[convert] tensors {n // 4 + 1}/{n}" not in res.stdout
    assert oct((tmp_path / "m").stat().st_mode & 0o777) == oct(0o775)
    assert {oct(f.stat().st_mode & 0o777) for f in (tmp_path / "m").iterdir()} == {oct(0o664)}


def _small_hf():
    from conftest import tiny_hf_model

    tokens, _, _ = byte_level_vocab()
    return tiny_hf_model("llama", vocab_size=len(tokens), hidden_size=32, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, num_hidden_layers=1, tie_word_embeddings=True)


def _assert_fails_cleanly(path, tmp_path, match):
    with pytest.raises(LightftError, match=match):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left behind


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "g.gguf", _small_hf(), arch="gemma")
    _assert_fails_cleanly(path, tmp_path, r"architecture 'gemma' is not supported; supported: llama")


def test_unsupported_tensor_type(tmp_path):
    path = tmp_path / "q.gguf"
    write_gguf(path, _small_hf())
    # rewrite one tensor as Q6_K (256-value blocks of 210 bytes), which the converter does not handle
    src = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    for key, field in src.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            w.add_key_value(key, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for t in src.tensors:
        if t.name == "blk.0.ffn_down.weight":
            w.add_tensor(t.name, np.zeros((32, 210), dtype=np.uint8), raw_dtype=Q.Q6_K)
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _assert_fails_cleanly(tmp_path / "k.gguf", tmp_path, 
                          r"blk\.0\.ffn_down\.weight has type Q6_K.*supported types: F32")


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    _assert_fails_cleanly(bad, tmp_path, "not a readable GGUF file")
    _assert_fails_cleanly(tmp_path / "missing.gguf", tmp_path, "file not found")


def test_sentencepiece_vocabulary(tmp_path):
    """A "llama" (SentencePiece) vocabulary: merges recovered from scores, byte fallback, space prefix."""
    from lightft.gguf_tokenizer import tokenizer_files

    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "▁hell", "▁hello", "▁w", "or", "▁wor", "ld",
              "▁world"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces))],
            "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(pieces),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    files = tokenizer_files(meta, tmp_path / "x.gguf")
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("hello world é")
    assert ids[0] == 1 and [tokens[i] for i in ids[1:3]] == ["▁hello", "▁world"]
    assert tokens[ids[-2]] == "<0xC3>" and tokens[ids[-1]] == "<0xA9>"  # byte fallback for 'é'
    assert tok.decode(ids) == "hello world é"
    with pytest.raises(LightftError, match="tokenizer model 'bert' is not supported; supported: gpt2, llama"):
        tokenizer_files({**meta, "tokenizer.ggml.model": "bert"}, tmp_path / "x.gguf")
