"""Checkpoint key <-> lightft module path translation, driven by per-family tables written as data.

A table row is (checkpoint template, lightft template, transform). `{i}` stands for a layer index.
The only transform is "T": GPT-2 stores linear weights as Conv1D (in, out) and we use nn.Linear's
(out, in). The same table, read backwards, writes checkpoints in the family's own layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch

Row = tuple[str, str, Optional[str]]


def _to_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


@dataclass
class KeyMap:
    rows: list[Row]
    base_prefixes: tuple[str, ...] = ()  # e.g. "bert.", "model.": stripped before matching
    ignored: tuple[str, ...] = ()  # regexes of checkpoint keys that are known and deliberately unused
    _fwd: list[tuple[re.Pattern, str, Optional[str]]] = field(init=False, repr=False)
    _back: list[tuple[re.Pattern, str, Optional[str]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fwd = [(_to_regex(src), dst, tf) for src, dst, tf in self.rows]
        self._back = [(_to_regex(dst), src, tf) for src, dst, tf in self.rows]

    def strip_prefix(self, key: str) -> tuple[str, str]:
        """Split 'bert.encoder.x' into ('bert.', 'encoder.x'); keys without a known prefix keep ''."""
        for prefix in self.base_prefixes:
            if key.startswith(prefix):
                return prefix, key[len(prefix) :]
        return "", key

    def to_lightft(self, key: str) -> Optional[tuple[str, Optional[str]]]:
        """Checkpoint key -> (lightft key, transform), or None when no row matches."""
        _, bare = self.strip_prefix(key)
        for candidates in (bare, key):
            for pattern, dst, tf in self._fwd:
                m = pattern.match(candidates)
                if m:
                    return dst.replace("{i}", m.group(1)) if m.groups() else dst, tf
        return None

    def is_ignored(self, key: str) -> bool:
        return any(re.search(p, key) for p in self.ignored)

    def to_checkpoint(self, key: str, prefix: str = "") -> Optional[tuple[str, Optional[str]]]:
        """lightft key -> (checkpoint key with `prefix` on body keys, transform); None if unmapped."""
        for pattern, src, tf in self._back:
            m = pattern.match(key)
            if m:
                name = src.replace("{i}", m.group(1)) if m.groups() else src
                top_level = name.startswith("lm_head.")  # HF keeps the LM head outside the base model
                return (name if top_level else prefix + name), tf
        return None


def apply_transform(tensor: torch.Tensor, transform: Optional[str]) -> torch.Tensor:
    """Both directions of "T" are the same transpose; contiguous so safetensors can save it."""
    if transform == "T":
        return tensor.t().contiguous()
    assert transform is None, f"unknown transform {transform}"
    return tensor
