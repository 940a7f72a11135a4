"""Tiny random decoder folders with a character-level tokenizer (tests only: no downloads)."""

from __future__ import annotations

import json
import string
from pathlib import Path

from conftest import save_hf, tiny_hf_model

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.ascii_letters + string.digits + " .,:;!?'\"()-_/\n#<>|{}")
SIMPLE_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>\n{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def char_tokenizer(path: Path) -> None:
    """tokenizer.json: one token per character (< 99 ids, so it fits the tiny models' vocab)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    assert len(vocab) <= 99
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(path / "tokenizer.json"))


def tiny_decoder(tmp_path: Path, family: str = "gpt2", chat_template: str | None = None, **overrides) -> Path:
    """A saved tiny GPT-2 / Llama with eos=2, pad=0 and the character tokenizer; optional chat template."""
    kw = {"eos_token_id": 2, "bos_token_id": 1, "pad_token_id": 0}
    if family == "gpt2":
        kw["n_positions"] = 128
    kw.update(overrides)
    path = save_hf(tiny_hf_model(family, **kw), tmp_path / f"tiny-{family}{'-chat' if chat_template else ''}")
    char_tokenizer(path)
    cfg = {"eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    if chat_template:
        cfg["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return path


def tiny_llama():
    """A 2-layer grouped-query Llama `Transformer` with tied embeddings, built in memory (no folder, no tokenizer)."""
    from lightft.config import ModelConfig
    from lightft.model import Transformer, init_random_weights

    cfg = ModelConfig(family="llama", vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=24, causal=True, lm_head=True, tie_embeddings=True, mlp="gated",
                      norm="rmsnorm", position="rope", activation="silu", pre_norm=True)
    model = Transformer(cfg)
    init_random_weights(model)
    return model
