"""Sequence classification data: CSV / TSV (GLUE as shipped) / JSONL / JSON with text[, pair] and label.

Labels are strings or integers (anything else is an error naming the records) and stay strings in
the tokenised cache; the id mapping is made from the training split (sorted,
numerically when every label is a number) and saved in the run folder, so evaluation on another
file uses the same ids and an unseen label is an error naming its file and line.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from lightft.data.base import LabelledDataModule, pad_sequences
from lightft.data.cache import Example
from lightft.data.readers import Record, read_records, require_field
from lightft.errors import LightftError, excerpt


# GLUE files as shipped name their columns per task; used only when the default `text` column is absent.
GLUE_COLUMNS = [("sentence", None), ("sentence1", "sentence2"), ("question1", "question2"),
                ("question", "sentence"), ("premise", "hypothesis")]


def sort_labels(labels: set[str]) -> list[str]:
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_kind(value: Any) -> Optional[str]:
    """What is wrong with a label value, or None for a string or an integer (the two kinds of class name).

    Anything else would become a class of its own by its text: `1.0` next to `1`, `True`, `[1, 2]`,
    NaN. Those are refused rather than guessed at.
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (str, int)):
        return None
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else "a float (write 1, not 1.0, or quote it)"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def check_labels(path: str, records: list[Record], column: str, needed: bool) -> list[Optional[str]]:
    """Each record's label as a stripped string (None: unlabelled); bad labels name every record that has one.

    `needed` (training and validation data): a missing or null label is an error, as an empty one is.
    Elsewhere (eval / predict files) such a record is unlabelled: never scored, counted in the report.
    """
    out: list[Optional[str]] = []
    bad: list[tuple[int, Any, str]] = []
    for line, rec in records:
        if needed:
            require_field(path, line, rec, column)
        value = rec.get(column)
        if value is None:
            if needed:
                bad.append((line, value, "null (every training and validation record needs a label)"))
            out.append(None)
            continue
        kind = label_kind(value)
        if kind is not None:
            bad.append((line, value, kind))
            out.append(None)
            continue
        text = str(value).strip()
        if not text and needed:
            raise LightftError(f"{path}:{line}: empty label in column {column!r}")
        out.append(text or None)
    if bad:
        line, value, kind = bad[0]
        lines = ", ".join(str(b[0]) for b in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise LightftError(f"{path}:{line}: label {excerpt(value, 40)} is {kind}; labels must be strings or "
                           f"integers (bad labels on line{'s' if len(bad) > 1 else ''} {lines}; {len(bad)} in all)")
    return out


class ClassificationDataModule(LabelledDataModule):
    task = "classify"

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        o, tok = self.opts, self.tokenizer
        examples, stats = [], {"records": 0}
        records = read_records(path, o.format)
        text_col, pair_col = self.columns(records[0][1])
        labels = check_labels(path, records, o.label_column, needed=split in ("train", "val"))
        for (line, rec), label in zip(records, labels):
            if self.full(examples, split, stats):
                break
            stats["records"] += 1
            text = require_field(path, line, rec, text_col)
            pair = require_field(path, line, rec, pair_col) if pair_col else None
            if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
                raise LightftError(f"{path}:{line}: text fields must be strings")
            if label is None:
                stats["unlabelled"] = stats.get("unlabelled", 0) + 1
            enc = tok.encode_with_offsets(text, pair)
            keep = self.handle_overlong(path, line, enc.ids, stats)
            if keep is None:
                continue
            ex: Example = {"input_ids": enc.ids[:keep], "token_type_ids": enc.type_ids[:keep],
                           "label": label or "", "line": line}
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

    def set_soft_targets(self, by_line: dict[int, list[float]]) -> None:
        """Distillation (lightft/train/teachers.py): each training example's teacher probabilities, in
        `label_names` order; training batches then carry them as `soft_targets` (B, labels)."""
        for e in self.datasets["train"]:
            e["soft_targets"] = by_line[e["line"]]

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        batch = {
            **self.padded_inputs(examples),
            "token_type_ids": pad_sequences([e["token_type_ids"] for e in examples], 0),
            "labels": torch.tensor([self.label_to_id.get(e["label"], -100) for e in examples]),
            "line": torch.tensor([e["line"] for e in examples]),
        }
        if all("soft_targets" in e for e in examples):
            batch["soft_targets"] = torch.tensor([e["soft_targets"] for e in examples], dtype=torch.float32)
        return batch
