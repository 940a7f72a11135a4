"""Evaluating and predicting with a trained run, an export (or a base model with a fresh head, as a 'before' figure).

The run is rebuilt without Lightning by `load_run` (lightft/runs/load.py), an export from its folder
and the head `read_task_head` finds there (lightft/task_heads.py); Lightning's Trainer then only runs
the test / predict loops over the task module, on one device.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

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
from lightft.train.run import build_module, jsonable, make_trainer, seed_everything


def use_threads(opts: Options) -> None:
    if opts.threads:
        torch.set_num_threads(opts.threads)


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


def evaluate(task: str, model: str, data: str, opts: Options) -> dict[str, float]:
    """Metrics of a run (or of a base model with an untrained head, as a 'before' figure) on `data`."""
    spec = get_task(task)
    seed_everything(opts.seed)
    use_threads(opts)
    module, tokenizer, run_opts = module_for(task, model, opts)
    eval_opts = eval_options(run_opts, opts, opts.progress)
    task_state = module.task_state() if module is not None else {}
    dm = spec.datamodule(tokenizer, eval_opts, eval_file=data, **spec.datamodule.eval_args(task_state))
    dm.prepare_data()
    dm.setup("test")
    if module is None:
        module = build_module(task, model, opts, dm.task_args())
    trainer = make_trainer(eval_opts, None, module.monitor, module.monitor_mode, for_training=False)
    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {k.removeprefix("test_"): v for k, v in jsonable(results).items()}


def predict(task: str, model: str, data: str, opts: Options) -> list[dict[str, Any]]:
    spec = get_task(task)
    use_threads(opts)
    module, tokenizer, run_opts = module_for(task, model, opts)
    if module is None:
        raise LightftError(f"{model}: predict needs a trained run folder (lightft train {task} ... --out RUN)")
    eval_opts = eval_options(run_opts, opts, progress=False)
    dm = spec.datamodule(tokenizer, eval_opts, eval_file=data, **spec.datamodule.eval_args(module.task_state()))
    dm.prepare_data()
    dm.setup("predict")
    trainer = make_trainer(eval_opts, None, module.monitor, module.monitor_mode, for_training=False)
    batches = trainer.predict(module, datamodule=dm)
    return [rec for batch in batches for rec in batch]
