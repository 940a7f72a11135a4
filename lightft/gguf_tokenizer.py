"""Rebuild `tokenizer.json` and its companion files from the vocabulary a GGUF file stores.

A GGUF keeps the tokenizer as metadata: the token strings, their types (normal, control, byte ...),
the BPE merges and the special token ids. Two vocabulary kinds are rebuilt:
- "gpt2": byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2 ...). Tokens and merges are already spelled
  in the byte alphabet; only the pre-tokenizer split (named by `tokenizer.ggml.pre`) must be chosen.
- "llama": SentencePiece BPE (Llama 2, Mistral). No merges are stored; they are recovered from the
  token scores (a longer piece with a higher score was merged earlier), with byte fallback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from lightft.errors import LightftError

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> (split regex, digits one by one first): how llama.cpp pre-splits text for that vocabulary
PRE_SPLITS = {
    "default": (GPT2_SPLIT, False), "gpt2": (GPT2_SPLIT, False),
    "smollm": (GPT2_SPLIT, True), "starcoder": (GPT2_SPLIT, True), "refact": (GPT2_SPLIT, True),
    "llama-bpe": (LLAMA3_SPLIT, False), "llama3": (LLAMA3_SPLIT, False), "smaug-bpe": (LLAMA3_SPLIT, False),
    "qwen2": (QWEN2_SPLIT, False),
}


def _byte_level_bpe(meta: dict[str, Any], source: Path) -> Tokenizer:
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_SPLITS:
        raise LightftError(f"{source}: byte-level pre-tokenizer {pre!r} is not supported; supported: "
                           f"{', '.join(PRE_SPLITS)}")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    split, digits = PRE_SPLITS[pre]
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    steps += [pre_tokenizers.Split(Regex(split), behavior="isolated"),
              pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: dict[str, Any], source: Path) -> Tokenizer:
    tokens, scores = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.scores")
    if scores is None:
        raise LightftError(f"{source}: SentencePiece vocabulary without tokenizer.ggml.scores; cannot recover merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = []  # (score of the merged piece, its id, (left, right)): best score merges first
    for piece, score in zip(tokens, scores):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], (left, right)))
    merges = [pair for *_, pair in sorted(ranked)]
    unk_id = meta.get("tokenizer.ggml.unknown_token_id", 0)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True))
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    tok.normalizer = normalizers.Sequence(([normalizers.Prepend("▁")] if prefix else [])
                                          + [normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tok


BUILDERS = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}


def _token(meta: dict[str, Any], key: str) -> str | None:
    index = meta.get(f"tokenizer.ggml.{key}")
    tokens = meta["tokenizer.ggml.tokens"]
    return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None


def tokenizer_files(meta: dict[str, Any], source: Path) -> dict[str, dict[str, Any]]:
    """{file name: JSON content} for tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    kind = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise LightftError(f"{source}: the GGUF holds no vocabulary (tokenizer.ggml.tokens)")
    if kind not in BUILDERS:
        raise LightftError(f"{source}: tokenizer model {kind!r} is not supported; supported: {', '.join(BUILDERS)}")
    tok = BUILDERS[kind](meta, source)
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or []
    # Control tokens (<|im_start|>, <s>) must never be split; user-defined ones are matched whole too.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind_ in zip(tokens, types) if kind_ == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind_ in zip(tokens, types) if kind_ == USER_DEFINED])
    special = {name: _token(meta, key) for name, key in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                                          ("unk_token", "unknown_token_id"),
                                                          ("pad_token", "padding_token_id")]}
    special = {k: v for k, v in special.items() if v is not None}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    bos, eos = special.get("bos_token"), special.get("eos_token")
    template = "$A"
    if add_bos and bos:
        template = f"{bos} {template}"
    if add_eos and eos:
        template = f"{template} {eos}"
    if template != "$A":  # so that `transformers` and plain `tokenizers` add them as llama.cpp would
        ids = [(t, tokens.index(t)) for t in {bos if add_bos else None, eos if add_eos else None} if t]
        pair = f"{template} {template.replace('$A', '$B')}"
        tok.post_processor = processors.TemplateProcessing(single=template, pair=pair, special_tokens=ids)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos, "add_eos_token": add_eos,
              "clean_up_tokenization_spaces": False, **special}
    arch = meta.get("general.architecture")
    if arch and f"{arch}.context_length" in meta:
        config["model_max_length"] = int(meta[f"{arch}.context_length"])
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return {"tokenizer.json": json.loads(tok.to_str()), "tokenizer_config.json": config,
            "special_tokens_map.json": special}
