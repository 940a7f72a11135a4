"""A GGUF file's tokenizer metadata <-> `tokenizer.json` and its companion files, both ways.

A GGUF keeps the tokenizer as metadata: the token strings, their types (normal, control, byte ...),
the BPE merges and the special token ids. Two vocabulary kinds are rebuilt (`tokenizer_files`):
- "gpt2": byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2 ...). Tokens and merges are already spelled
  in the byte alphabet; only the pre-tokenizer split (named by `tokenizer.ggml.pre`) must be chosen.
- "llama": SentencePiece BPE (Llama 2, Mistral). No merges are stored; they are recovered from the
  token scores (a longer piece with a higher score was merged earlier), with byte fallback.
`tokenizer_metadata` goes the other way for GGUF export: the same two kinds, read from a model
folder; the pre-tokenizer split is named by matching it against `PRE_SPLITS`, and SentencePiece
scores are written so that the merge order comes back (a piece's score is minus its merge's rank).
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


# ------------------------------------------------------------------------------------ export direction
NORMAL, UNKNOWN, UNUSED, BYTE = 1, 2, 5, 6  # llama.cpp token types (CONTROL, USER_DEFINED above)


def _merge_pairs(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model.get("merges") or []]


def _pre_name(pre: Any, source: Path) -> str:
    """The `tokenizer.ggml.pre` name whose split (and digit rule) this tokenizer.json pre-tokenizer uses."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    split = next((s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"), None)
    if split is None and any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        split = GPT2_SPLIT  # ByteLevel's own regex is GPT-2's
    for name, (regex, wants_digits) in PRE_SPLITS.items():
        if name != "default" and regex == split and wants_digits == digits:
            return name
    raise LightftError(f"{source}: the pre-tokenizer (split {str(split)[:40]!r}, digits one by one: {digits}) has no "
                       f"llama.cpp name lightft knows; known: {', '.join(PRE_SPLITS)}")


def tokenizer_metadata(folder: Path, vocab_size: int) -> dict[str, Any]:
    """GGUF `tokenizer.*` metadata for the tokenizer of a model folder (byte-level or SentencePiece BPE).

    The token list is padded with unused `[PAD{i}]` tokens up to the model's `vocab_size` rows, as
    llama.cpp's converter does.
    """
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LightftError(f"{path}: cannot be read ({e}); GGUF export needs the model's tokenizer.json") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise LightftError(f"{path}: a {model.get('type')} tokenizer cannot be written to GGUF; lightft writes "
                           "byte-level BPE and SentencePiece BPE vocabularies")
    vocab = dict(model.get("vocab") or {})
    added = {t["content"]: t for t in data.get("added_tokens") or []}
    for text, t in added.items():
        vocab.setdefault(text, t["id"])
    if max(vocab.values(), default=-1) >= vocab_size:
        raise LightftError(f"{path}: the tokenizer has ids up to {max(vocab.values())}, but the model has only "
                           f"{vocab_size} embedding rows")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = NORMAL
    for text, t in added.items():
        types[t["id"]] = CONTROL if t.get("special") else USER_DEFINED
    merges = _merge_pairs(model)
    byte_fallback = bool(model.get("byte_fallback"))
    meta: dict[str, Any] = {"tokenizer.ggml.tokens": tokens}
    if byte_fallback:  # SentencePiece BPE: scores carry the merge order; <0xNN> pieces are bytes
        rank = {a + b: -float(k) for k, (a, b) in reversed(list(enumerate(merges)))}
        meta["tokenizer.ggml.model"] = "llama"
        meta["tokenizer.ggml.scores"] = [rank.get(t, 0.0) for t in tokens]
        for i, text in enumerate(tokens):
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">") and types[i] == NORMAL:
                types[i] = BYTE
        prepend = any(n.get("type") == "Prepend" for n in (data.get("normalizer") or {}).get("normalizers", []))
        meta["tokenizer.ggml.add_space_prefix"] = prepend
    else:
        meta["tokenizer.ggml.model"] = "gpt2"
        meta["tokenizer.ggml.pre"] = _pre_name(data.get("pre_tokenizer"), path)
        meta["tokenizer.ggml.merges"] = [f"{a} {b}" for a, b in merges]
    config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            loaded = json.loads((folder / name).read_text(encoding="utf-8"))
            config = {**loaded, **config}  # tokenizer_config.json wins, as load_tokenizer reads them
    for name, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")]:
        text = config.get(f"{name}_token")
        text = text.get("content") if isinstance(text, dict) else text
        if text is not None and text in vocab:
            meta[f"tokenizer.ggml.{key}"] = vocab[text]
    if model.get("unk_token") in vocab and byte_fallback:
        types[vocab[model["unk_token"]]] = UNKNOWN
    meta["tokenizer.ggml.token_type"] = types
    post = json.dumps(data.get("post_processor") or {})
    bos = tokens[meta["tokenizer.ggml.bos_token_id"]] if "tokenizer.ggml.bos_token_id" in meta else None
    meta["tokenizer.ggml.add_bos_token"] = bool(config.get("add_bos_token", bos is not None and f'"{bos}"' in post))
    meta["tokenizer.ggml.add_eos_token"] = bool(config.get("add_eos_token", False))
    template = config.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str):
        meta["tokenizer.chat_template"] = template
    return meta
