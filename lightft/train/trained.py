"""A trained run or an export as a task module, with its tokenizer and options: what evaluation, prediction
and distillation teachers (lightft/train/teachers.py) all start from.

The run is rebuilt without Lightning by `load_run` (lightft/runs/load.py), an export from its folder
and the head `read_task_head` finds there (lightft/task_heads.py).
"""

from __future__ import annotations

from typing import Any, Optional

from lightft.checkpoint import load_model
from lightft.errors import LightftError
from lightft.options import Options, eval_overrides
from lightft.runs import load_run
from lightft.runs.defaults import resolve_auto
from lightft.runs.folder import is_run_dir, read_run
from lightft.task_heads import read_task_head
from lightft.tasks.module import TaskModule
from lightft.tokenizer import load_tokenizer
from lightft.train.registry import get_task


def module_for(task: str, model: str, opts: Options) -> tuple[Optional[TaskModule], Any, Options]:
    """A module for eval/predict: a trained run folder, an export (its head), or (None) a base model to be
    given a fresh head."""
    if not is_run_dir(model):
        module = export_module(model, task, opts)
        return module, load_tokenizer(model), module.opts if module is not None else opts
    module = run_module(model, {k: getattr(opts, k) for k in eval_overrides() if getattr(opts, k) is not None})
    if module.task != task:
        raise LightftError(f"{model}: this run was trained for task {module.task!r}, not {task!r}")
    return module, load_tokenizer(read_run(model)["base_model"]), module.opts


def export_module(folder: str, task: str, opts: Options) -> Optional[TaskModule]:
    """The task module of an export (or any folder holding a task head): its backbone and its own head,
    never a fresh one, with the run's options as an export records them (else this command's).
    None for a plain backbone (no head in the folder)."""
    saved = read_task_head(folder)
    if saved is None:
        return None
    if saved.task != task:
        raise LightftError(f"{folder}: holds a trained {saved.task} head, not a {task} one")
    if saved.options:
        given = {k: getattr(opts, k) for k in eval_overrides() if getattr(opts, k) is not None}
        opts = Options.from_dict({**saved.options, **given, "compile": False}, saved.source)
    opts = resolve_auto(task, opts, saved.options or None)  # --dtype / --precision auto: the export's values
    module = get_task(task).module(load_model(folder, dtype=opts.dtype), opts, **saved.task_state)
    module.load_trainable(saved.tensors, saved.source)
    return module.eval()


def run_module(run_dir: str, overrides: Optional[dict[str, Any]] = None) -> TaskModule:
    """The task module of a trained run: `load_run`'s backbone with the run's trained head."""
    run = load_run(run_dir, overrides)
    module = get_task(run.task).module(run.backbone, run.options, **run.task_state)
    module.load_trainable({f"head.{k}": v for k, v in run.head.items()}, f"{run_dir}/weights.safetensors")
    return module


def eval_options(run_opts: Options, opts: Options, progress: bool) -> Options:
    """The run's own options with this command's values of the options marked eval="override".

    --limit-val comes from the command only (default: every record): a run trained with
    --limit-val must not silently evaluate or predict a subset of another file.
    """
    given = {k: getattr(opts, k) for k in eval_overrides()}
    given["format"] = opts.format or run_opts.format
    return Options.from_dict({**run_opts.to_dict(), **given, "progress": progress})
