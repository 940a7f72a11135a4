"""The run folder: validating --out / --resume / --overwrite before anything is written, and its files
(no Lightning here: inference reads run folders through this layer). How it is created, locked and
replaced: lightft/runs/safe_output.py.

A run folder holds: run.json (task, resolved options, base model, task state such as label names),
weights.safetensors (trainable tensors: LoRA factors + head, or everything under --full),
checkpoints/ (`last.ckpt` and `best.ckpt`), logs/metrics.csv, metrics.json, and the marker `.lightft`
(kind run) that lets --overwrite replace it. run.json's `status` is "training" until the weights and
metrics are written, then "finished"; `data_files` holds the sha256 of every data file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file

from lightft.checkpoint import read_json, write_atomic_safetensors
from lightft.errors import LightftError
from lightft.options import DistillOptions, LoraOptions, Options, comma_list, flag, resume_must_match
from lightft.runs.checkpoint_file import LAST, load_checkpoint_file
from lightft.runs.safe_output import check_folder_target, say

RUN_FILE, WEIGHTS_FILE = "run.json", "weights.safetensors"


def is_run_dir(path: Optional[str]) -> bool:
    return bool(path) and (Path(path) / RUN_FILE).is_file()


def read_run(run_dir: str) -> dict[str, Any]:
    info = read_json(Path(run_dir) / RUN_FILE)
    for key in ("task", "base_model", "options"):
        if key not in info:
            raise LightftError(f"{run_dir}/{RUN_FILE}: missing key {key!r}; the run folder is damaged")
    return info


def check_train_options(opts: Options) -> None:
    """Conflicting or missing options, reported before anything is read or written."""
    if not opts.out:
        raise LightftError("--out is required: the run folder to write")
    if opts.resume and opts.overwrite:
        raise LightftError("--resume and --overwrite conflict: --resume continues the run in --out, --overwrite "
                           "deletes it; choose one")
    if opts.checkpoint_every is not None and opts.checkpoint_every < 1:
        raise LightftError("--checkpoint-every must be a positive number of optimiser steps, "
                           f"not {opts.checkpoint_every}")
    for name in ("batch_size", "grad_accum", "max_length", "num_nodes"):
        if getattr(opts, name) < 1:
            raise LightftError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(opts, name)}")
    if opts.epochs < 1 and opts.max_steps < 1:
        raise LightftError("nothing to train: set --epochs or --max-steps to at least 1")
    if opts.train is None:
        raise LightftError("--train is required: the training data file")
    if opts.ema and opts.strategy == "fsdp":  # lightft/train/ema.py: the average is kept per named parameter
        raise LightftError("--ema does not work with --strategy fsdp (each rank holds shards of the weights); "
                           "use --strategy ddp or drop --ema")
    if opts.dora and opts.freeze == "backbone":
        raise LightftError("--dora trains LoRA layers, but --freeze backbone trains the head only: drop one of them")
    if not opts.lora:
        given = LoraOptions.changed(opts)
        if given:
            raise LightftError(f"{flag(given[0])} has no effect with --full (it sets up LoRA); "
                               "drop it, or train with --lora")
    if opts.teachers is None:
        given = DistillOptions.changed(opts, but=("teachers",))
        if given:
            raise LightftError(f"{flag(given[0])} has no effect without --teachers (the trained runs to learn "
                               f"from); add --teachers, or drop {flag(given[0])}")
    if opts.allow_data_change and not opts.resume:
        raise LightftError("--allow-data-change only applies with --resume (a new run reads its data as it is)")
    check_not_itself(opts)


def check_not_itself(opts: Options) -> None:
    """--model or --init naming the --out run would make the run start from itself (a loop in its record)."""
    out = os.path.realpath(opts.out)
    for name, value in [("model", opts.model), ("init", opts.init),
                        *[("teachers", t) for t in comma_list(opts.teachers)]]:
        if value and os.path.realpath(value) == out:
            raise LightftError(f"{flag(name)} {value} is the --out run: a run cannot start from itself; choose "
                               "another --out (or drop --overwrite and add --resume to continue it)")


def run_progress(out: Path) -> str:
    """How far the run in `out` got, in words, for messages."""
    if (out / WEIGHTS_FILE).is_file() and read_json(out / RUN_FILE).get("status", "finished") == "finished":
        return "a finished run"
    last = out / "checkpoints" / LAST
    if not last.is_file():
        return "an unfinished run (stopped before its first checkpoint)"
    try:
        step = load_checkpoint_file(last, mmap=True).get("global_step", "?")
    except LightftError:
        step = "?"
    return f"an unfinished run (last checkpoint at step {step})"


def check_run_dir(opts: Options, out: Path) -> bool:
    """Validate --out for a new run, a --resume or an --overwrite, before anything is written (the caller
    holds the output lock). Returns True when an earlier run is to be replaced. Changes nothing."""
    if out.exists() and not out.is_dir():
        raise LightftError(f"{out}: --out must be a folder, and this is a file")
    if opts.resume:
        if not is_run_dir(str(out)):
            raise LightftError(f"{out}: nothing to resume (no {RUN_FILE}); drop --resume")
        check_resume_matches(read_run(str(out))["options"], opts, out)
        last = out / "checkpoints" / LAST
        if last.is_file():
            load_checkpoint_file(last, mmap=True)  # refused / damaged: stop before any change
        return False
    if out.exists() and any(out.iterdir()) and not opts.overwrite and is_run_dir(str(out)):
        raise LightftError(f"{out}: folder already holds {run_progress(out)}; choose a new --out, add --resume to "
                           "continue it, or --overwrite to replace it")
    return check_folder_target(out, "run", opts.overwrite, "--out", "--overwrite")


def check_resume_matches(saved: dict[str, Any], opts: Options, out: Path) -> None:
    """A resume must use every option that shapes the data or the training trajectory as the run did
    (the fields marked `resume` in lightft/options.py); an option the run predates counts at its default."""
    now = opts.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(Options)}
    changed = [k for k in resume_must_match() if saved.get(k, defaults[k]) != now[k]]
    if changed:
        k = changed[0]
        raise LightftError(f"{out}: --resume with {flag(k)} {now[k]!r}, but the run was started with "
                           f"{saved.get(k, defaults[k])!r}; resume with the options of the run ({len(changed)} "
                           f"differ: {', '.join(changed)})")


def clean_partial_files(run_dir: Path) -> list[str]:
    """Remove the temporary files a killed process left inside a run (`last.ckpt.tmp-PID`, `run.json.tmp`...):
    never complete, never read. Call with the run's lock held (no other writer exists)."""
    found = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir() for p in sorted(d.iterdir())
             if p.is_file() and re.search(r"\.tmp(-\d+)?$", p.name)]
    for p in found:
        p.unlink()
    if found:
        say(f"removed {', '.join(str(p.relative_to(run_dir)) for p in found)} in {run_dir}: left by a process "
            "killed while writing them")
    return [p.name for p in found]


def keep_earlier_log(run_dir: Path) -> None:
    """Lightning's CSV logger starts logs/metrics.csv afresh: keep the part before a resume beside it."""
    log = run_dir / "logs" / "metrics.csv"
    if log.is_file():
        n = len(list(log.parent.glob("metrics.part*.csv"))) + 1
        os.replace(log, log.with_name(f"metrics.part{n}.csv"))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A run's weights.safetensors (never a pickle); a missing or damaged file is a one-line error."""
    if not path.is_file():
        raise LightftError(f"{path}: missing; the run did not finish (resume it with --resume)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for damaged headers
        raise LightftError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]}); "
                           "the file is truncated or corrupt") from None


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """The trainable tensors as safetensors, written atomically."""
    write_atomic_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in state.items()})
