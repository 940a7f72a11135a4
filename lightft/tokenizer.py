"""The tokenizer of a model folder: `tokenizers.Tokenizer` + special tokens + a sandboxed chat template.

Special tokens are gathered from tokenizer_config.json, special_tokens_map.json and config.json (in
that order of trust). Padding and truncation stored in tokenizer.json are switched off: lightft pads
per batch and counts over-long examples instead of cutting them silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from tokenizers import Tokenizer as HFTokenizer

from lightft.errors import LightftError

SPECIAL_NAMES = ("bos", "eos", "pad", "unk", "cls", "sep", "mask")


def _token_text(value: Any) -> Optional[str]:
    """special_tokens_map entries are either "text" or {"content": "text", ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_optional_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LightftError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


class Tokenizer:
    """Thin wrapper: encode/decode, special token ids (`tok.eos_id` ...) and `apply_chat_template`."""

    def __init__(self, backend: HFTokenizer, tokens: dict[str, Optional[str]], chat_template: Optional[str],
                 source: str = "", add_bos: Optional[bool] = None):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.tokens = tokens
        self.chat_template = chat_template
        self.source = source
        self.add_bos = add_bos
        for name in SPECIAL_NAMES:
            text = tokens.get(name)
            setattr(self, f"{name}_token", text)
            setattr(self, f"{name}_id", backend.token_to_id(text) if text else None)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = True) -> list[int]:
        ids = self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def encode_batch(self, texts: list[str], pairs: Optional[list[str]] = None, pad: bool = True,
                     padding_side: str = "right", add_special_tokens: bool = True):
        """(input_ids, attention_mask), two (B, T) long tensors, for a model's forward.

        Rows are padded to the longest with the pad token (else EOS, else 0; the mask hides it either
        way): on the right by default, on the left for generation (`padding_side="left"`). Nothing
        is truncated. `pad=False` asks for texts of equal length and refuses others.
        """
        import torch

        if padding_side not in ("right", "left"):
            raise LightftError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        if pairs is not None and len(pairs) != len(texts):
            raise LightftError(f"encode_batch: {len(texts)} texts but {len(pairs)} pairs")
        rows = [self.encode(t, pairs[i] if pairs is not None else None, add_special_tokens)
                for i, t in enumerate(texts)]
        width = max((len(r) for r in rows), default=0)
        if not pad and any(len(r) != width for r in rows):
            raise LightftError(f"encode_batch(pad=False): the texts have {min(map(len, rows))} to {width} tokens; "
                               "pass pad=True to pad them")
        pad_id = next((i for i in (self.pad_id, self.eos_id) if i is not None), 0)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
            ids[i, cols] = torch.tensor(row, dtype=torch.long)
            mask[i, cols] = 1
        return ids, mask

    def encode_with_offsets(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = True):
        """The full `tokenizers.Encoding` (ids, offsets, word_ids, type_ids, sequence_ids)."""
        return self.backend.encode(text, pair, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render the model's Jinja chat template in a sandbox (no code from a model folder ever runs)."""
        if not self.chat_template:
            raise LightftError(f"{self.source}: the tokenizer has no chat_template in tokenizer_config.json")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise LightftError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        from jinja2 import TemplateError

        try:
            template = env.from_string(self.chat_template)
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as e:  # includes the sandbox's SecurityError: a template reaching for Python internals
            raise LightftError(f"{self.source}: chat template refused or broken ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def load_tokenizer(model_dir: Union[str, os.PathLike]) -> Tokenizer:
    """Load tokenizer.json and the special tokens / chat template that sit beside it."""
    path = Path(model_dir)
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise LightftError(f"{path}: missing tokenizer.json (only the fast-tokenizer format is read; "
                           "save the tokenizer with a recent `tokenizers`)")
    try:
        backend = HFTokenizer.from_file(str(tok_file))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise LightftError(f"{tok_file}: cannot be parsed ({str(e).splitlines()[0]})") from None
    tok_cfg = _read_optional_json(path / "tokenizer_config.json")
    special_map = _read_optional_json(path / "special_tokens_map.json")
    model_cfg = _read_optional_json(path / "config.json")
    tokens: dict[str, Optional[str]] = {}
    for name in SPECIAL_NAMES:
        key = f"{name}_token"
        text = _token_text(tok_cfg.get(key)) or _token_text(special_map.get(key))
        if text is None and model_cfg.get(f"{name}_token_id") is not None:
            text = backend.id_to_token(model_cfg[f"{name}_token_id"]) if isinstance(model_cfg[f"{name}_token_id"], int) else None
        tokens[name] = text
    chat_template = tok_cfg.get("chat_template")
    if isinstance(chat_template, list):  # several named templates: take "default"
        chat_template = next((t.get("template") for t in chat_template if t.get("name") == "default"), None)
    if chat_template is None and (path / "chat_template.jinja").is_file():
        chat_template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    return Tokenizer(backend, tokens, chat_template, str(path), tok_cfg.get("add_bos_token"))
