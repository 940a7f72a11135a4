"""The options whose default is decided per run, turned into concrete values once, before a run starts.

- `precision` and `dtype` "auto": from the hardware and the training mode (lightft/precision.py);
- `group_by_length` unset: on for tasks whose rows are padded to their longest example, off where
  rows are packed to a fixed length (lm always, instruct with --packing): those rows are all about
  --max-length long, so grouping them would only take away some shuffling.

run.json records the concrete values, and a `--resume` that leaves an option at its default
continues with the value the run was started with (the same machine may resolve differently after
a driver update; the run's trajectory must not change under it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from lightft.options import Options
from lightft.precision import resolve_dtype, resolve_precision

AUTO_OPTIONS = ("precision", "dtype", "group_by_length")


def rows_are_packed(task: str, opts: Options) -> bool:
    """Whether `task`'s training rows are packed to a fixed length (no padding to save by grouping)."""
    return task == "lm" or (task == "instruct" and opts.packing)


def base_trains(opts: Options) -> bool:
    """Whether some base weight gets gradients (then it keeps an fp32 master copy)."""
    return not opts.lora and opts.freeze != "backbone"


def is_auto(name: str, value: Any) -> bool:
    return value is None if name == "group_by_length" else value == "auto"


def resolve_auto(task: str, opts: Options, recorded: Optional[dict[str, Any]] = None) -> Options:
    """`opts` with every auto option made concrete; `recorded`: a resumed run's options (their values win)."""
    values: dict[str, Any] = {}
    for name in AUTO_OPTIONS:
        if is_auto(name, getattr(opts, name)) and recorded is not None and not is_auto(name, recorded.get(name)):
            values[name] = recorded[name]
    precision = values.get("precision", resolve_precision(opts.precision, opts.accelerator))
    values["precision"] = precision
    values.setdefault("dtype", resolve_dtype(opts.dtype, precision, base_trains(opts)))
    if opts.group_by_length is None and "group_by_length" not in values:
        values["group_by_length"] = not rows_are_packed(task, opts)
    return dataclasses.replace(opts, **values)
