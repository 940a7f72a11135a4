"""Evaluating and predicting with a trained run, an export (or a base model with a fresh head, as a 'before' figure).

The module, its tokenizer and options come from lightft/train/trained.py; Lightning's Trainer then only
runs the test / predict loops over the task module, on one device.
"""

from __future__ import annotations

from typing import Any

import torch

from lightft.errors import LightftError
from lightft.options import Options
from lightft.train.registry import get_task
from lightft.train.run import build_module, jsonable, make_trainer, seed_everything
from lightft.train.trained import eval_options, export_module, module_for, run_module  # noqa: F401 (re-exported)


def use_threads(opts: Options) -> None:
    if opts.threads:
        torch.set_num_threads(opts.threads)


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
    return predict_with_data(task, model, data, opts)[0]


def predict_with_data(task: str, model: str, data: str, opts: Options,
                      labelled: bool = False) -> tuple[list[dict[str, Any]], Any]:
    """`predict`'s records and the DataModule that read `data` (its examples carry each record's line and
    gold label). `labelled`: refuse a file with no labels, as evaluation does (lightft/ensemble.py scores them)."""
    spec = get_task(task)
    use_threads(opts)
    module, tokenizer, run_opts = module_for(task, model, opts)
    if module is None:
        raise LightftError(f"{model}: predict needs a trained run folder (lightft train {task} ... --out RUN)")
    eval_opts = eval_options(run_opts, opts, progress=False)
    dm = spec.datamodule(tokenizer, eval_opts, eval_file=data, **spec.datamodule.eval_args(module.task_state()))
    dm.prepare_data()
    dm.setup("test" if labelled else "predict")
    trainer = make_trainer(eval_opts, None, module.monitor, module.monitor_mode, for_training=False)
    batches = trainer.predict(module, datamodule=dm)
    return [rec for batch in batches for rec in batch], dm
