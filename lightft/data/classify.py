"""Sequence classification data: CSV / TSV (GLUE as shipped) / JSONL / JSON with text[, pair] and label.

Labels stay strings in the tokenised cache; the id mapping is made from the training split (sorted,
numerically when every label is a number) and saved in the run folder, so evaluation on another
file uses the same ids and an unseen label is an error naming its file and line.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightft.data.base import LabelledDataModule, pad_sequences
from lightft.data.cache import Example
from lightft.data.readers import read_records, require_field
from lightft.errors import LightftError


# GLUE files as shipped name their columns per task; used only when the default `text` column is absent.
GLUE_COLUMNS = [("sentence", None), ("sentence1", "sentence2"), ("question1", "question2"),
                ("question", "sentence"), ("premise", "hypothesis")]


def sort_labels(labels: set[str]) -> list[str]:
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class ClassificationDataModule(LabelledDataModule):
    task = "classify"

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        o, tok = self.opts, self.tokenizer
        examples, stats = [], {"records": 0}
        records = read_records(path, o.format)
        text_col, pair_col = self.columns(records[0][1])
        for line, rec in records:
            if self.full(examples, split, stats):
                break
            stats["records"] += 1
            text = require_field(path, line, rec, text_col)
            pair = require_field(path, line, rec, pair_col) if pair_col else None
            if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
                raise LightftError(f"{path}:{line}: text fields must be strings")
            label = rec.get(o.label_column)
            if split == "train":
                require_field(path, line, rec, o.label_column)
                if not str(label).strip():
                    raise LightftError(f"{path}:{line}: empty label in column {o.label_column!r}")
            enc = tok.encode_with_offsets(text, pair)
            keep = self.handle_overlong(path, line, enc.ids, stats)
            if keep is None:
                continue
            ex: Example = {"input_ids": enc.ids[:keep], "token_type_ids": enc.type_ids[:keep],
                           "label": "" if label is None else str(label).strip(), "line": line}
            if keep < len(enc.ids) and tok.sep_id is not None and ex["input_ids"][-1] != tok.sep_id and enc.ids[-1] == tok.sep_id:
                ex["input_ids"][-1] = tok.sep_id  # keep the closing [SEP] an encoder expects
            examples.append(ex)
        return examples, stats

    def columns(self, first: dict[str, Any]) -> tuple[str, Optional[str]]:
        """(text, pair) column names: the configured ones, or GLUE's when the default is absent."""
        o = self.opts
        if o.text_column == "text" and "text" not in first and o.pair_column is None:
            for text, pair in GLUE_COLUMNS:
                if text in first and (pair is None or pair in first):
                    return text, pair
        return o.text_column, o.pair_column

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        if self.label_names is None:
            # from the training data; for a base model with an untrained head (a 'before' baseline), from the
            # evaluated file itself
            split = "train" if "train" in self.datasets else "eval"
            self.label_names = sort_labels({e["label"] for e in self.datasets[split] if e["label"]})
            if len(self.label_names) < 2:
                raise LightftError(f"{self.files[split]}: only one label ({self.label_names}); "
                                   f"check --label-column ({self.opts.label_column!r})")
        self.label_to_id = {name: i for i, name in enumerate(self.label_names)}
        if stage == "test" and "eval" in self.datasets and not any(e["label"] for e in self.datasets["eval"]):
            raise LightftError(f"{self.files['eval']}: no record has a {self.opts.label_column!r} field, so there is "
                               "nothing to score; set --label-column, or use `lightft predict` for unlabelled data")
        for split, data in self.datasets.items():
            for e in data:
                if e["label"] and e["label"] not in self.label_to_id:
                    path = self.files.get(split) or self.files["train"]
                    raise LightftError(f"{path}:{e['line']}: label {e['label']!r} was not seen in training; "
                                       f"known labels: {', '.join(self.label_names)}")

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        return {
            **self.padded_inputs(examples),
            "token_type_ids": pad_sequences([e["token_type_ids"] for e in examples], 0),
            "labels": torch.tensor([self.label_to_id.get(e["label"], -100) for e in examples]),
            "line": torch.tensor([e["line"] for e in examples]),
        }
