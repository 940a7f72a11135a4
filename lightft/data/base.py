"""The LightningDataModule every dataset format builds on: read -> tokenise (cached) -> split -> batches.

A format's subclass implements two methods:
  `build_examples(path, split)` -> (examples, stats): read the file and tokenise each record into a
      dict of ints / lists of ints (plus any strings post-processing needs);
  `collate(examples)` -> batch dict of tensors (dynamic padding helpers below).
This base does the rest: caching, a seeded validation split, length-grouped batches, and reporting
of over-long examples. Tokenisation happens in `prepare_data` (once, on rank 0 of each node) and
`setup` reads the cache, so multi-process runs never tokenise twice.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightft.data.cache import Example, maybe_cached
from lightft.data.sampler import ResumableLoader, ResumableSampler, length_grouped_order, random_order
from lightft.errors import LightftError
from lightft.options import Options, cache_options
from lightft.tokenizer import Tokenizer


def pad_sequences(seqs: list[list[int]], value: int) -> torch.Tensor:
    """(B, T_max) tensor, right-padded with `value` (rounding T_max up: TaskDataModule.pad_to_multiple)."""
    longest = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), longest), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def attention_mask_for(seqs: list[list[int]], width: int) -> torch.Tensor:
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        mask[i, : len(s)] = 1
    return mask


class TaskDataModule(L.LightningDataModule):
    """Base DataModule; see the module docstring for what a format implements."""

    task = "base"
    length_key = "input_ids"
    # The shortest --max-length that leaves anything to learn, and why (checked before any work).
    min_length, min_length_why = 1, "an example needs at least one token"
    # Per-token batch keys (B, T) and the value their padding holds; input_ids hold `input_pad_id()`.
    token_pad_values = {"attention_mask": 0, "token_type_ids": 0, "position_ids": 0, "segment_ids": 0,
                        "labels": -100, "word_ids": -1}

    def __init__(self, tokenizer: Tokenizer, opts: Options, train_file: Optional[str] = None,
                 val_file: Optional[str] = None, eval_file: Optional[str] = None):
        super().__init__()
        self.tokenizer, self.opts = tokenizer, opts
        self.files = {"train": train_file, "val": val_file, "eval": eval_file}
        self.datasets: dict[str, list[Example]] = {}
        self._loaded: dict[str, list[Example]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.pad_multiple = opts.resolved_pad_multiple()  # checked here: a bad value fails before any work
        if opts.max_length < self.min_length:
            raise LightftError(f"--max-length {opts.max_length} is too short for {self.task}: {self.min_length_why}; "
                               f"use at least {self.min_length}")

    # --- what a format implements -------------------------------------------------------------
    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        raise NotImplementedError

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        raise NotImplementedError

    def eval_collate(self, examples: list[Example]) -> dict[str, Any]:
        """The batches of validation / test / predict (default: `collate`; mlm masks them reproducibly)."""
        return self.collate(examples)

    def task_args(self) -> dict[str, Any]:
        """What the task module needs from the data after `setup` (e.g. label names)."""
        return {}

    @classmethod
    def eval_args(cls, task_state: dict[str, Any]) -> dict[str, Any]:
        """Constructor kwargs that rebuild this DataModule for a trained run (e.g. its label names)."""
        return {}

    def cache_options(self) -> dict[str, Any]:
        """What the token cache key holds besides the files: every option marked `cache` for this task
        (lightft/options.py) and the tokenizer; a subclass adds values that are not options."""
        return {"task": self.task, **cache_options(self.opts, self.task), "tokenizer": self.tokenizer.source,
                "vocab": self.tokenizer.vocab_size}

    # --- shared machinery ---------------------------------------------------------------------
    def source_files(self, path: str) -> list[Path]:
        p = Path(path)
        if p.is_dir():
            return sorted(q for q in p.rglob("*") if q.is_file())
        if not p.is_file():
            raise LightftError(f"{p}: data file not found")
        return [p]

    def load(self, split: str) -> list[Example]:
        """Tokenised examples of one split (from the cache when the inputs did not change).

        Kept in memory once loaded, so `setup` after `prepare_data` in the same process does not read
        back the cache it has just written."""
        if split in self._loaded:
            return self._loaded[split]
        path = self.files[split]
        assert path is not None
        tok_file = Path(self.tokenizer.source) / "tokenizer.json"
        files = self.source_files(path) + ([tok_file] if tok_file.is_file() else [])
        limit = self.build_limit(split)
        key = {**self.cache_options(), "split": split, **({"limit": limit} if limit else {})}
        examples, stats, _ = maybe_cached(self.opts.cache, files, key, lambda: self.build_examples(path, split))
        self.stats[split] = stats
        self._loaded[split] = examples
        return examples

    def build_limit(self, split: str) -> Optional[int]:
        """How many examples tokenising `split` may stop after (None: all of them).

        --limit-train / --limit-val keep the first N examples of a split. Where the split is its own
        file, records after the first N are never tokenised. A validation split held out of --train
        (no --val) is drawn from all of --train's examples, so that the same examples are held out
        whatever --limit-train is; then every record is tokenised and the limits cut afterwards."""
        if split == "train":
            return self.opts.limit_train if self.files.get("val") is not None else None
        return self.opts.limit_val

    def full(self, examples: list[Example], split: str, stats: dict[str, Any]) -> bool:
        """True once `examples` holds as many as `build_limit(split)` asks for: a format's
        `build_examples` stops reading there (and `stats` notes that it stopped early)."""
        limit = self.build_limit(split)
        if limit is None or len(examples) < limit:
            return False
        stats["stopped_at_limit"] = limit
        return True

    def prepare_data(self) -> None:
        """Tokenise into the cache (Lightning: once per node). Without a cache, `setup` does the work."""
        if self.datasets or not self.opts.cache:
            return
        for split, path in self.files.items():
            if path is not None:
                self.load(split)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        for split, path in self.files.items():
            if path is not None:
                self.datasets[split] = self.load(split)
        if "train" in self.datasets and "val" not in self.datasets and self.opts.val_fraction > 0:
            self.datasets["train"], self.datasets["val"] = self.split(self.datasets["train"])
        if self.opts.limit_train and "train" in self.datasets:
            self.datasets["train"] = self.datasets["train"][: self.opts.limit_train]
        for split in ("val", "eval"):
            if self.opts.limit_val and split in self.datasets:
                self.datasets[split] = self.datasets[split][: self.opts.limit_val]
        for split, data in self.datasets.items():
            if not data:
                raise LightftError(f"{self.files.get(split) or self.files['train']}: no usable examples for {split}")
        self.report()

    def split(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """Seeded hold-out of `val_fraction` of the training examples."""
        g = torch.Generator().manual_seed(self.opts.seed)
        order = torch.randperm(len(examples), generator=g).tolist()
        n_val = max(1, int(len(examples) * self.opts.val_fraction))
        if n_val >= len(examples):
            raise LightftError(f"{self.files['train']}: too few examples ({len(examples)}) to hold out "
                               "a validation split; pass --val or lower --val-fraction")
        return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]

    def report(self) -> None:
        """One line per split: counts, and how many examples were over --max-length (never silent)."""
        for split, stats in self.stats.items():
            parts = [f"{k}={v}" for k, v in stats.items() if not isinstance(v, (list, dict))]
            print(f"[data] {split}: {len(self.datasets.get(split, []))} examples; {' '.join(parts)}", file=sys.stderr)

    def handle_overlong(self, path: str, line: int, ids: list, stats: dict[str, Any]) -> Optional[int]:
        """Apply --overlong to one example; returns the length to keep, or None to drop it."""
        limit = self.opts.max_length
        if len(ids) <= limit:
            return len(ids)
        stats["overlong"] = stats.get("overlong", 0) + 1
        if self.opts.overlong == "error":
            raise LightftError(f"{path}:{line}: example has {len(ids)} tokens, over --max-length {limit}; "
                               "raise --max-length or use --overlong truncate|drop")
        if self.opts.overlong == "drop":
            stats["dropped"] = stats.get("dropped", 0) + 1
            return None
        stats["truncated"] = stats.get("truncated", 0) + 1
        return limit

    def input_pad_id(self) -> int:
        """The token id input_ids are padded with (the tokenizer's pad token, else 0)."""
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

    def padded_inputs(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """input_ids (B, T_max) right-padded with the tokenizer's pad id, and the matching attention_mask."""
        ids = [e["input_ids"] for e in examples]
        input_ids = pad_sequences(ids, self.input_pad_id())
        return {"input_ids": input_ids, "attention_mask": attention_mask_for(ids, input_ids.shape[1])}

    def pad_to_multiple(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Right-pad every per-token tensor of a collated batch to a length that is a multiple of
        --pad-to-multiple, never past --max-length (full packed rows stay as they are).

        Why: torch.compile specialises on shapes, so a batch length that follows the longest row
        recompiles again and again; multiples of 64 bound the shapes to max_length / 64. The new
        positions are padding exactly like the collate's own (attention_mask 0, labels -100), so
        losses and metrics do not change, and right padding keeps a causal decoder on its
        mask-free path (lightft/kernels/attention.py, right_padded_mask).
        """
        m = self.pad_multiple
        B, T = batch["input_ids"].shape
        width = min(math.ceil(T / m) * m, max(T, self.opts.max_length))
        if width == T:
            return batch
        values = {"input_ids": self.input_pad_id(), **self.token_pad_values}
        out = dict(batch)
        for key, value in values.items():
            t = batch.get(key)
            if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape == (B, T):
                out[key] = torch.nn.functional.pad(t, (0, width - T), value=value)  # (B, T) -> (B, width)
        return out

    def padded_batch(self, collate: Any, examples: list[Example]) -> dict[str, Any]:
        return self.pad_to_multiple(collate(examples))

    def collate_fn(self, train: bool) -> Any:
        """What the loaders call: the format's collate (or eval_collate), then `pad_to_multiple`."""
        return functools.partial(self.padded_batch, self.collate if train else self.eval_collate)

    def _loader(self, split: str, train: bool, by_length: bool = False) -> DataLoader:
        """`by_length`: longest examples first (validation and test, whose metrics do not depend on the
        order): batches of similar lengths carry little padding. Predictions keep the file's order."""
        data = self.datasets[split]
        bs = self.opts.batch_size if train else (self.opts.eval_batch_size or 2 * self.opts.batch_size)
        workers = {"num_workers": self.opts.num_workers, "persistent_workers": self.opts.num_workers > 0}
        if not train:  # own generator: evaluation must not draw from the global RNG (exact resume)
            if by_length:
                data = sorted(data, key=lambda e: -len(e[self.length_key]))  # stable: ties keep the file order
            return DataLoader(data, batch_size=bs, collate_fn=self.collate_fn(train=False), generator=torch.Generator(),
                              **workers)
        return self.train_loader(data, bs, workers)

    def train_loader(self, data: list[Example], bs: int, workers: dict[str, Any]) -> ResumableLoader:
        """Seeded, rank-split, resumable order (see lightft/data/sampler.py); length-grouped if asked."""
        trainer = self.trainer  # set by Lightning when this DataModule is attached to a Trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if self.opts.group_by_length:
            lengths = [len(e[self.length_key]) for e in data]
            order_fn = lambda seed: length_grouped_order(lengths, bs * world, seed, self.opts.group_window)  # noqa: E731
        else:
            order_fn = lambda seed: random_order(len(data), seed)  # noqa: E731
        sampler = ResumableSampler(len(data), order_fn, self.opts.seed, num_replicas=world, rank=rank)
        # own generator: creating the loader's iterator must not draw from the global RNG (exact resume)
        return ResumableLoader(data, batch_size=bs, sampler=sampler, collate_fn=self.collate_fn(train=True),
                               generator=torch.Generator().manual_seed(self.opts.seed), **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False, by_length=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("eval", train=False, by_length=True)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("eval", train=False)


class LabelledDataModule(TaskDataModule):
    """A format whose examples carry label names (classify, ner): the names travel to the module and
    back from a run folder, so evaluation uses the training ids."""

    def __init__(self, *args: Any, label_names: Optional[list[str]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.label_names = label_names

    def task_args(self) -> dict[str, Any]:
        return {"label_names": self.label_names}

    @classmethod
    def eval_args(cls, task_state: dict[str, Any]) -> dict[str, Any]:
        return {"label_names": task_state.get("label_names")}
