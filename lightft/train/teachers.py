"""Knowledge distillation: soft targets from trained teacher runs, computed once before training.

`--teachers RUN[,RUN...]` names trained classify runs (or exports). Each one reads the student's
--train file with its own tokenizer and options (a teacher may be another model: SmolLM2 teaching
MiniLM), and its predicted probabilities are averaged over the teachers, record by record (the
file's line numbers pair them up). The student's DataModule then carries them beside the gold labels
and the task's loss mixes the two (`--distill-alpha`; lightft/tasks/classify.py). Averaging the
probabilities of several runs gives targets closer to an ensemble's, which is the point: one student
learns what several teachers agree on, and keeps one model's size and speed.

The teachers run here as plain no-grad forward passes over length-sorted batches (no Lightning
loop), at the precision each teacher was trained in. Every process of a multi-process
run computes them itself: they are the same everywhere, and nothing has to be sent between ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from lightft.errors import LightftError
from lightft.options import Options, comma_list
from lightft.precision import device_type
from lightft.runs.folder import is_run_dir
from lightft.task_heads import read_task_head
from lightft.train.averaging import ByLine, average_by_line
from lightft.train.registry import get_task
from lightft.train.trained import eval_options, module_for

Targets = ByLine  # file line -> probability per label, in the student's label order


def teacher_paths(opts: Options, task: str) -> list[str]:
    """The --teachers list, each entry checked to be a trained run or an export with a head."""
    paths = comma_list(opts.teachers)
    if paths and not hasattr(get_task(task).datamodule, "set_soft_targets"):
        raise LightftError(f"teachers: distillation is implemented for classify, not {task}; drop the key")
    if opts.teachers is not None and not paths:
        raise LightftError("--teachers is empty: give one or more trained classify runs, separated by commas")
    for path in paths:
        if not is_run_dir(path) and not (Path(path, "config.json").is_file() and read_task_head(path) is not None):
            raise LightftError(f"--teachers {path}: not a trained run folder or an export with a task head; "
                               "train the teacher first (lightft train classify ... --out RUN)")
    return paths


def teacher_probabilities(path: str, task: str, train_file: str, opts: Options,
                          label_names: list[str]) -> Targets:
    """One teacher's probabilities for every record of `train_file`, keyed by line, in `label_names` order
    (the task's `predict_records`, so the same values as `lightft predict` writes: 6 decimals)."""
    module, tokenizer, run_opts = module_for(task, path, opts)
    assert module is not None  # teacher_paths checked that it has a trained head
    names = module.task_state().get("label_names")
    if names is None or sorted(names) != sorted(label_names):
        raise LightftError(f"--teachers {path}: its labels ({', '.join(map(str, names or []))}) are not the "
                           f"training data's ({', '.join(label_names)}); a teacher must predict the same labels")
    # The teacher reads the text as it was trained to (its max length, template). With --val, the records the
    # student keeps (--limit-train) are the first ones of the file, so the teacher needs no more than those;
    # a validation split held out of --train is drawn from all of it (TaskDataModule.build_limit).
    limit = opts.limit_train if opts.val is not None else None
    read = dataclasses.replace(eval_options(run_opts, opts, progress=False), limit_val=limit,
                               text_column=opts.text_column, pair_column=opts.pair_column,
                               label_column=opts.label_column)
    spec = get_task(task)
    dm = spec.datamodule(tokenizer, read, eval_file=train_file, **spec.datamodule.eval_args(module.task_state()))
    dm.setup("test")
    device = torch.device("cuda") if device_type(opts.accelerator) == "cuda" else torch.device("cpu")
    module = module.to(device).eval()
    bf16 = read.precision == "bf16-mixed"  # the teacher's own (bf16-true weights need no autocast)
    out: Targets = {}
    with torch.no_grad():
        for batch in dm.test_dataloader():
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                records = module.predict_records(batch, module(batch))
            for rec in records:
                out[rec["line"]] = [rec["probabilities"][name] for name in label_names]
    return out


def teacher_targets(task: str, train_file: str, opts: Options, label_names: list[str]) -> Targets:
    """The teachers' probabilities averaged record by record (see the module docstring)."""

    def each_teacher() -> Iterator[tuple[str, Targets]]:
        for path in teacher_paths(opts, task):
            start = time.perf_counter()
            probs = teacher_probabilities(path, task, train_file, opts, label_names)
            yield path, probs  # averaged (and checked against the teachers before it) before the line below
            print(f"[distill] teacher {path}: {len(probs)} records in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)

    return average_by_line(each_teacher(), lambda path, n, before: (
        f"--teachers {path}: predicted {n} records of {train_file}, the teachers before it {before}; each teacher "
        "must read every record (drop --overlong drop from the teacher runs)"))


def attach_teacher_targets(dm: Any, task: str, opts: Options) -> None:
    """Give each training example of `dm` (after setup) its averaged teacher probabilities."""
    targets = teacher_targets(task, opts.train, opts, dm.label_names)
    missing = [e["line"] for e in dm.datasets["train"] if e["line"] not in targets]
    if missing:
        raise LightftError(f"{opts.train}:{missing[0]}: no teacher prediction for this record ({len(missing)} "
                           "records without one); the teachers must read every training record")
    dm.set_soft_targets(targets)
