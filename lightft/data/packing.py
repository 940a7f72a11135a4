"""Causal-LM batches: pack token sequences into fixed rows without cross-document attention, and collate.

Every causal example is a dict with `input_ids` and `labels` (-100 = no loss). Packing concatenates
examples into rows of at most `max_length` tokens; each row carries `position_ids` that restart at 0
for every document and `segment_ids` (1, 2, ... per document) that the model turns into a
block-diagonal causal mask, so a token never attends to another document. The first token of a
document (and of a continuation row) gets label -100: nothing in its own document predicts it.
"""

from __future__ import annotations

from typing import Any

from lightft.data.base import attention_mask_for, pad_sequences
from lightft.data.cache import Example


def pack_rows(examples: list[Example], max_length: int, split_long: bool) -> list[Example]:
    """Concatenate examples into rows of <= max_length tokens.

    split_long=True (lm): a document continues into the next row, like cutting one token stream.
    split_long=False (instruct): an example never straddles rows; it starts a new row if it does not fit.
    """
    rows: list[Example] = []
    row: Example = {"input_ids": [], "labels": [], "position_ids": [], "segment_ids": []}

    def flush() -> None:
        nonlocal row
        if row["input_ids"]:
            rows.append(row)
        row = {"input_ids": [], "labels": [], "position_ids": [], "segment_ids": []}

    for ex in examples:
        ids, labels = ex["input_ids"], ex["labels"]
        if not split_long and len(row["input_ids"]) + len(ids) > max_length:
            flush()
        start = 0
        while start < len(ids):
            room = max_length - len(row["input_ids"])
            if room == 0:
                flush()
                room = max_length
            piece = slice(start, start + room)
            n = len(ids[piece])
            seg = (row["segment_ids"][-1] + 1) if row["segment_ids"] else 1
            piece_labels = list(labels[piece])
            piece_labels[0] = -100  # the first token of a segment has no context inside the segment
            row["input_ids"] += ids[piece]
            row["labels"] += piece_labels
            row["position_ids"] += list(range(n))
            row["segment_ids"] += [seg] * n
            start += n
    flush()
    return rows


def causal_example(input_ids: list[int], labels: list[int]) -> Example:
    """An unpacked example: one segment, positions 0..n-1."""
    return {"input_ids": input_ids, "labels": labels, "position_ids": list(range(len(input_ids))),
            "segment_ids": [1] * len(input_ids)}


def collate_causal(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded batch; `segment_ids` only when some row holds several segments (else plain causal)."""
    ids = [e["input_ids"] for e in examples]
    input_ids = pad_sequences(ids, pad_id)
    T = input_ids.shape[1]
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": pad_sequences([e["labels"] for e in examples], -100),
        "position_ids": pad_sequences([e["position_ids"] for e in examples], 0),
        "attention_mask": attention_mask_for(ids, T),
    }
    if any(e["segment_ids"] and e["segment_ids"][-1] > 1 for e in examples):
        batch["segment_ids"] = pad_sequences([e["segment_ids"] for e in examples], 0)  # pads: segment 0
    assert batch["labels"].shape[1] == T
    return batch
