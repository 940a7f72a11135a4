"""Raw text for continued pretraining (`lm`): .txt files, folders of them, or JSONL {"text"} -> packed rows.

Each document is tokenised and closed with EOS; documents are split into train/validation (seeded,
by document, so no text is in both), then packed into rows of --max-length (see lightft.data.packing).
A document longer than a row simply continues in the next row, as in any token-stream pretraining;
how many did so is reported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from lightft.data.base import TaskDataModule
from lightft.data.cache import Example
from lightft.data.packing import collate_causal, pack_rows
from lightft.data.readers import detect_format, iter_jsonl, read_text, require_field
from lightft.errors import LightftError
from lightft.textfile import split_lines

TEXT_SUFFIXES = (".txt", ".jsonl")


def eos_id_of(tokenizer: Any) -> int:
    if tokenizer.eos_id is None:
        raise LightftError(f"{tokenizer.source}: the tokenizer has no eos_token; set eos_token in "
                           "tokenizer_config.json (decoder tasks close every document with it)")
    return tokenizer.eos_id


class LMDataModule(TaskDataModule):
    task = "lm"
    split_long = True  # documents continue across rows
    min_length, min_length_why = 2, "a row of one token has no next token to predict (perplexity would read 1.0)"

    def source_files(self, path: str) -> list[Path]:
        p = Path(path)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in TEXT_SUFFIXES)
            if not files:
                raise LightftError(f"{p}: no .txt or .jsonl files in this folder")
            return files
        return super().source_files(path)

    def documents(self, file: Path) -> list[tuple[int, str]]:
        """(line, text) of every document in one file."""
        fmt = detect_format(file, self.opts.format)
        if fmt == "jsonl":
            docs = []
            for line, rec in iter_jsonl(file):
                text = require_field(file, line, rec, self.opts.text_column)
                if not isinstance(text, str):
                    raise LightftError(f"{file}:{line}: field {self.opts.text_column!r} must be a string")
                docs.append((line, text))
            return docs
        if fmt != "txt":
            raise LightftError(f"{file}: lm reads .txt files, folders of them, or JSONL {{\"text\": ...}}; "
                               f"got format {fmt!r}")
        text = read_text(file)
        if self.opts.doc_per_line:
            return [(n, t) for n, t in enumerate(split_lines(text), start=1)]
        return [(1, text)]

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        tok, eos = self.tokenizer, eos_id_of(self.tokenizer)
        examples: list[Example] = []
        stats: dict[str, Any] = {"files": 0, "documents": 0, "empty": 0, "tokens": 0}
        for file in self.source_files(path):
            if self.full(examples, split, stats):
                break
            stats["files"] += 1
            for line, text in self.documents(file):
                if self.full(examples, split, stats):
                    break
                if not text.strip():
                    stats["empty"] += 1
                    continue
                ids = tok.encode(text) + [eos]
                examples.append({"input_ids": ids, "labels": list(ids), "line": line})
                stats["documents"] += 1
                stats["tokens"] += len(ids)
        if not examples:
            raise LightftError(f"{path}: no text found (all documents are empty)")
        return examples, stats

    def setup(self, stage: Optional[str] = None) -> None:
        """Split by document (base class), then pack each split into rows."""
        if self.datasets:
            return
        super().setup(stage)
        self.datasets = {split: self.pack(split, docs) for split, docs in self.datasets.items()}

    def pack(self, split: str, docs: list[Example]) -> list[Example]:
        limit = self.opts.max_length
        rows = pack_rows(docs, limit, split_long=self.split_long)
        longer = sum(len(d["input_ids"]) > limit for d in docs)
        print(f"[data] {split}: packed {len(docs)} documents into {len(rows)} rows of <= {limit} tokens"
              f"{f'; {longer} documents longer than a row continue in the next' if longer else ''}", file=sys.stderr)
        self.stats.setdefault(split, {})["rows"] = len(rows)
        return rows

    def input_pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else eos_id_of(self.tokenizer)

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        return collate_causal(examples, self.input_pad_id())
