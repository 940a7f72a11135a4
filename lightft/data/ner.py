"""Token classification (NER) data: CoNLL and JSONL sentences, words aligned to sub-word tokens.

CoNLL: one token per line, whitespace-separated columns, the tag in the last column, a blank line
(or a `-DOCSTART-` line) between sentences; every token line of a file must have the same number of
columns. JSONL: one sentence per line, `{"tokens": [...], "tags": [...]}` (tags optional for predict).

Tags stay strings in the tokenised cache (the id map is made from the training split in `setup`, as
for classify) so evaluating another file reuses the trained ids and an unseen tag is an error naming
its file and line. Each word's tag goes on its first sub-word (or on all of them with
`--label-all-subwords`); special tokens and the other sub-words get -100. The sentence text used for
character offsets in predictions is the words joined by single spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from lightft.data.base import LabelledDataModule, pad_sequences
from lightft.data.cache import Example
from lightft.data.readers import iter_jsonl, read_text, require_field
from lightft.textfile import split_lines
from lightft.errors import LightftError

Sentence = tuple[int, list[str], Optional[list[str]], int]  # (first line, words, tags or None, line step)


def check_tag(path: str, line: int, tag: str) -> None:
    """Tags must be BIO / IOB2: `O`, `B-TYPE` or `I-TYPE`."""
    if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
        raise LightftError(f"{path}:{line}: tag {tag!r} is not BIO / IOB2 (expected O, B-TYPE or I-TYPE)")


def iter_conll(path: str) -> Iterator[Sentence]:
    """Sentences of a CoNLL file; the column count is fixed by its first token line."""
    text = read_text(path)
    columns: Optional[int] = None
    words: list[str] = []
    tags: list[str] = []
    start = 0
    for n, raw in enumerate(split_lines(text), start=1):
        parts = raw.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                yield start, words, tags, 1
            words, tags = [], []
            continue
        if columns is None:
            if len(parts) < 2:
                raise LightftError(f"{path}:{n}: a CoNLL line needs at least a token and a tag column, found "
                                   f"{len(parts)} column")
            columns = len(parts)
        if len(parts) != columns:
            raise LightftError(f"{path}:{n}: {len(parts)} columns, but earlier lines have {columns}; "
                               "CoNLL lines are TOKEN ... TAG separated by whitespace")
        if not words:
            start = n
        check_tag(path, n, parts[-1])
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        yield start, words, tags, 1


def iter_ner_jsonl(path: str) -> Iterator[Sentence]:
    for n, rec in iter_jsonl(path):
        words = require_field(path, n, rec, "tokens", 'NER JSONL holds the words, one line per sentence: '
                              '{"tokens": ["Peter", "lives", "in", "Brussels"], "tags": [...]}; tags only to train '
                              'or evaluate')
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise LightftError(f"{path}:{n}: 'tokens' must be a non-empty list of non-empty strings")
        words = [w.strip() for w in words]
        tags = rec.get("tags")
        if tags is not None:
            if not isinstance(tags, list) or len(tags) != len(words) or not all(isinstance(t, str) for t in tags):
                raise LightftError(f"{path}:{n}: 'tags' must be a list of strings, one per token "
                                   f"({len(words)} tokens)")
            for t in tags:
                check_tag(path, n, t)
        yield n, words, tags, 0


def read_sentences(path: str, fmt: Optional[str]) -> list[Sentence]:
    """All sentences of a file: JSONL by `.jsonl`/`.json` or --format jsonl, CoNLL otherwise."""
    kind = fmt or ("jsonl" if Path(path).suffix.lower() in (".jsonl", ".json") else "conll")
    if kind not in ("jsonl", "conll", "txt"):
        raise LightftError(f"{path}: format {kind!r} is not an NER format; use conll or jsonl")
    sentences = list(iter_ner_jsonl(path) if kind == "jsonl" else iter_conll(path))
    if not sentences:
        raise LightftError(f"{path}: no sentences found (the file is empty)")
    return sentences


def word_offsets(words: list[str]) -> tuple[str, list[int], list[int]]:
    """(text, starts, ends): the words joined by single spaces and each word's [start, end) characters."""
    starts, ends, pos = [], [], 0
    for w in words:
        starts.append(pos)
        ends.append(pos + len(w))
        pos += len(w) + 1
    return " ".join(words), starts, ends


class NerDataModule(LabelledDataModule):
    task = "ner"

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        stats: dict[str, Any] = {"sentences": 0, "words": 0}
        examples = []
        for line, words, tags, step in read_sentences(path, self.opts.format):
            if self.full(examples, split, stats):
                break
            stats["sentences"] += 1
            stats["words"] += len(words)
            if tags is None and split == "train":
                raise LightftError(f"{path}:{line}: training sentences need 'tags'")
            enc = self.tokenizer.backend.encode(words, is_pretokenized=True)
            word_ids = [-1 if w is None else w for w in enc.word_ids]
            keep = self.handle_overlong(path, line, enc.ids, stats)
            if keep is None:
                continue
            ids, word_ids = enc.ids[:keep], word_ids[:keep]
            if keep < len(enc.ids) and self.tokenizer.sep_id is not None and enc.ids[-1] == self.tokenizer.sep_id:
                ids[-1], word_ids[-1] = self.tokenizer.sep_id, -1  # an encoder expects its closing [SEP]
            text, starts, ends = word_offsets(words)
            examples.append({"input_ids": ids, "word_ids": word_ids, "tags": " ".join(tags or []), "text": text,
                             "starts": starts, "ends": ends, "line": line, "line_step": step})
        return examples, stats

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        if self.label_names is None:
            # from the training data; for a base model with an untrained head (a baseline), from the file itself
            split = "train" if "train" in self.datasets else "eval"
            names = {t for e in self.datasets[split] for t in e["tags"].split()}
            # O first, then by entity type with B- before I-: stable ids that read well in run.json
            self.label_names = ["O"] + sorted(names - {"O"}, key=lambda t: (t[2:], t[:2]))
        self.label_to_id = {name: i for i, name in enumerate(self.label_names)}
        if stage == "test" and "eval" in self.datasets and not any(e["tags"] for e in self.datasets["eval"]):
            raise LightftError(f"{self.files['eval']}: no sentence has tags, so there is nothing to score; "
                               "use `lightft predict ner` for untagged data")
        for split, data in self.datasets.items():
            path = self.files.get(split) or self.files["train"]
            for e in data:
                for i, tag in enumerate(e["tags"].split()):
                    if tag not in self.label_to_id:
                        raise LightftError(f"{path}:{e['line'] + i * e['line_step']}: tag {tag!r} was not seen in "
                                           f"training; known tags: {', '.join(self.label_names)}")

    def token_labels(self, e: Example) -> list[int]:
        """Per sub-word label ids: the word's tag on its first sub-word (or all), -100 elsewhere."""
        tags = e["tags"].split()
        if not tags:
            return [-100] * len(e["input_ids"])
        out, prev = [], -1
        for w in e["word_ids"]:
            first = w != prev
            out.append(self.label_to_id[tags[w]] if w >= 0 and (first or self.opts.label_all_subwords) else -100)
            prev = w
        return out

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        return {
            **self.padded_inputs(examples),
            "labels": pad_sequences([self.token_labels(e) for e in examples], -100),
            "word_ids": pad_sequences([e["word_ids"] for e in examples], -1),  # (B, T), -1: not a word
            "line": torch.tensor([e["line"] for e in examples]),
            # strings for entity-level metrics and predictions (Lightning moves only the tensors)
            "tags": [e["tags"].split() for e in examples],
            "text": [e["text"] for e in examples],
            "starts": [e["starts"] for e in examples],
            "ends": [e["ends"] for e in examples],
        }
