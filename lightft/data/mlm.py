"""Masked-LM data: raw text (.txt one document per line, a folder of them, or JSONL {"text"}) -> masked blocks.

Each document is tokenised once (cached) and cut into blocks of at most `--max-length` tokens
(`[CLS] piece [SEP]`); blocks never cross documents. Masking is dynamic: it is drawn in `collate`,
so every epoch sees new masks, from a generator seeded by `--seed` (and the worker id), so a run is
reproducible. Validation masks are fixed per block (seeded by the block's index), so validation
loss is comparable across epochs. BERT's recipe: `--mlm-probability` (15 %) of the non-special
tokens are chosen; of those 80 % become [MASK], 10 % a random token, 10 % stay; only chosen tokens
carry a label (-100 elsewhere). With `--whole-word-mask`, whole words are chosen (all their pieces).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from lightft.data.base import TaskDataModule, attention_mask_for, pad_sequences
from lightft.data.cache import Example
from lightft.data.readers import iter_jsonl, read_text
from lightft.textfile import split_lines
from lightft.errors import LightftError


def read_documents(path: Path, text_field: str) -> list[tuple[int, str]]:
    """(line, text) of each non-empty document of one .txt / .jsonl file."""
    if path.suffix.lower() == ".jsonl":
        docs = []
        for line, rec in iter_jsonl(path):
            if not isinstance(rec.get(text_field), str):
                raise LightftError(f"{path}:{line}: missing string field {text_field!r} (set --text-column)")
            docs.append((line, rec[text_field]))
        return [(n, t) for n, t in docs if t.strip()]
    if path.suffix.lower() not in (".txt", ".text", ""):
        raise LightftError(f"{path}: mlm reads .txt (one document per line) or .jsonl {{\"text\"}} files")
    return [(n, t) for n, t in enumerate(split_lines(read_text(path)), start=1) if t.strip()]


def choose_positions(candidates: list[int], word_ids: Optional[list[int]], probability: float,
                     g: torch.Generator) -> list[int]:
    """Positions to predict: round(p * n) tokens (at least 1), or whole words until that budget is met."""
    if not candidates:
        return []
    budget = max(1, round(probability * len(candidates)))
    if word_ids is None:
        order = torch.randperm(len(candidates), generator=g)[:budget].tolist()
        return sorted(candidates[i] for i in order)
    words: dict[int, list[int]] = {}
    for pos in candidates:
        words.setdefault(word_ids[pos], []).append(pos)
    groups = list(words.values())
    chosen: list[int] = []
    for i in torch.randperm(len(groups), generator=g).tolist():
        if len(chosen) >= budget:
            break
        if chosen and len(chosen) + len(groups[i]) > budget:
            continue  # BERT skips a word that would overshoot the budget
        chosen += groups[i]
    return sorted(chosen)


def mask_block(ids: list[int], word_ids: Optional[list[int]], special: set[int], mask_id: int, vocab: int,
               probability: float, g: torch.Generator) -> tuple[list[int], list[int]]:
    """(masked input ids, labels) of one block under BERT's 80/10/10 rule."""
    candidates = [i for i, t in enumerate(ids) if t not in special]
    inputs, labels = list(ids), [-100] * len(ids)
    for pos in choose_positions(candidates, word_ids, probability, g):
        labels[pos] = ids[pos]
        r = float(torch.rand((), generator=g))
        if r < 0.8:
            inputs[pos] = mask_id
        elif r < 0.9:
            inputs[pos] = int(torch.randint(vocab, (), generator=g))
    return inputs, labels


class MLMDataModule(TaskDataModule):
    task = "mlm"
    min_length, min_length_why = 3, "a block is [CLS] text [SEP], so 2 tokens leave no room for text"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._generator: Optional[torch.Generator] = None

    def task_args(self) -> dict[str, Any]:
        """The base model folder (where the tokenizer came from): the task reads its MLM head there."""
        return {"model_dir": self.tokenizer.source}

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        tok = self.tokenizer
        if tok.mask_id is None or tok.cls_id is None or tok.sep_id is None:
            raise LightftError(f"{tok.source}: mlm needs an encoder tokenizer with [CLS], [SEP] and [MASK] tokens")
        room = self.opts.max_length - 2
        stats = {"documents": 0, "blocks": 0, "tokens": 0}
        examples: list[Example] = []
        for file in self.source_files(path):
            if self.full(examples, split, stats):
                break
            for _, text in read_documents(file, self.opts.text_column):
                if self.full(examples, split, stats):
                    break
                enc = tok.encode_with_offsets(text, add_special_tokens=False)
                words = [w if w is not None else -1 for w in enc.word_ids]
                stats["documents"] += 1
                stats["tokens"] += len(enc.ids)
                for lo in range(0, len(enc.ids), room):
                    piece = words[lo:lo + room]
                    examples.append({"input_ids": [tok.cls_id] + enc.ids[lo:lo + room] + [tok.sep_id],
                                     "word_ids": [-1] + piece + [-1], "index": len(examples)})
        stats["blocks"] = len(examples)
        if not examples:
            raise LightftError(f"{path}: no text found for mlm")
        return examples, stats

    def _batch(self, examples: list[Example], fixed: bool) -> dict[str, Any]:
        tok, o = self.tokenizer, self.opts
        special = {t for t in (tok.cls_id, tok.sep_id, tok.pad_id) if t is not None}
        if self._generator is None:
            info = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(o.seed + (info.id if info else 0))
        inputs, labels = [], []
        for e in examples:
            g = torch.Generator().manual_seed(o.seed * 1_000_003 + e["index"]) if fixed else self._generator
            x, y = mask_block(e["input_ids"], e["word_ids"] if o.whole_word_mask else None, special,
                              tok.mask_id, tok.vocab_size, o.mlm_probability, g)
            inputs.append(x)
            labels.append(y)
        input_ids = pad_sequences(inputs, self.input_pad_id())
        return {"input_ids": input_ids, "attention_mask": attention_mask_for(inputs, input_ids.shape[1]),
                "labels": pad_sequences(labels, -100)}

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        return self._batch(examples, fixed=False)

    def eval_collate(self, examples: list[Example]) -> dict[str, Any]:
        return self._batch(examples, fixed=True)
