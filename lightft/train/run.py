"""Run folders and the train / eval / predict flows every task shares.

A run folder holds: run.json (task, resolved options, base model, task state such as label names),
weights.safetensors (trainable tensors: LoRA factors + head, or everything under --full),
checkpoints/ (Lightning `last.ckpt` and `best.ckpt`), logs/metrics.csv and metrics.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from lightft import __version__
from lightft.checkpoint import load_model, read_json, write_atomic_json
from lightft.errors import LightftError
from lightft.options import Options
from lightft.tasks import get_task
from lightft.tokenizer import load_tokenizer
from lightft.train.callbacks import DataPosition, Throughput
from lightft.train.checkpointing import BEST, LAST, AtomicCheckpointIO, PeriodicCheckpoint, RngState, load_checkpoint_file
from lightft.train.distributed import build_strategy, children_see_prepared, prepared_by_parent, rank_zero_first
from lightft.train.module import TaskModule, prepare_backbone

RUN_FILE, WEIGHTS_FILE = "run.json", "weights.safetensors"


def is_run_dir(path: Optional[str]) -> bool:
    return bool(path) and (Path(path) / RUN_FILE).is_file()


def read_run(run_dir: str) -> dict[str, Any]:
    info = read_json(Path(run_dir) / RUN_FILE)
    for key in ("task", "base_model", "options"):
        if key not in info:
            raise LightftError(f"{run_dir}/{RUN_FILE}: missing key {key!r}; the run folder is damaged")
    return info


# Options a resumed run must share with the run it continues (anything else may change, e.g. --progress).
RESUME_MUST_MATCH = ("model", "train", "val", "init", "lora", "lora_r", "lora_alpha", "lora_targets", "rslora",
                     "freeze", "batch_size", "grad_accum", "seed", "max_length", "overlong", "format",
                     "text_column", "pair_column", "label_column", "val_fraction", "group_by_length",
                     "limit_train", "dtype", "schedule", "warmup", "weight_decay", "lr", "head_lr", "num_nodes")


LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "rslora")


def check_train_options(opts: Options) -> None:
    """Conflicting or missing options, reported before anything is read or written."""
    if not opts.out:
        raise LightftError("--out is required: the run folder to write")
    if opts.resume and opts.overwrite:
        raise LightftError("--resume and --overwrite conflict: --resume continues the run in --out, --overwrite "
                           "deletes it; choose one")
    if opts.checkpoint_every is not None and opts.checkpoint_every < 1:
        raise LightftError(f"--checkpoint-every must be a positive number of optimiser steps, not {opts.checkpoint_every}")
    for name in ("batch_size", "grad_accum", "max_length", "num_nodes"):
        if getattr(opts, name) < 1:
            raise LightftError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(opts, name)}")
    if opts.epochs < 1 and opts.max_steps < 1:
        raise LightftError("nothing to train: set --epochs or --max-steps to at least 1")
    if opts.train is None:
        raise LightftError("--train is required: the training data file")
    if not opts.lora:
        defaults = Options()
        given = [k for k in LORA_ONLY if getattr(opts, k) != getattr(defaults, k)]
        if given:
            raise LightftError(f"--{given[0].replace('_', '-')} has no effect with --full (it sets up LoRA); "
                               "drop it, or train with --lora")


def prepare_run_dir(opts: Options) -> Path:
    """Validate --out: new, --resume of the same run, or --overwrite. Never mixes two runs."""
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise LightftError(f"{out}: --out must be a folder, and this is a file")
    if opts.resume:
        if not is_run_dir(opts.out) or not (out / "checkpoints" / LAST).is_file():
            raise LightftError(f"{out}: nothing to resume (no run.json and checkpoints/{LAST}); drop --resume")
        saved = read_run(opts.out)["options"]
        now = opts.to_dict()
        changed = [k for k in RESUME_MUST_MATCH if k in saved and saved[k] != now[k]]
        if changed:
            k = changed[0]
            raise LightftError(f"{out}: --resume with --{k.replace('_', '-')} {now[k]!r}, but the run was started with "
                               f"{saved[k]!r}; resume with the options of the run ({len(changed)} differ: "
                               f"{', '.join(changed)})")
        load_checkpoint_file(out / "checkpoints" / LAST, mmap=True)  # refused / damaged: stop before any change
        return out
    if out.exists() and any(out.iterdir()):
        if not opts.overwrite:
            what = "another run" if is_run_dir(opts.out) else "other files"
            raise LightftError(f"{out}: folder already holds {what}; choose a new --out, add --resume to "
                               "continue it, or --overwrite to replace it")
        if not is_run_dir(opts.out):
            raise LightftError(f"{out}: --overwrite only replaces a run folder (with {RUN_FILE}), and this folder "
                               "holds other files; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def keep_earlier_log(run_dir: Path) -> None:
    """Lightning's CSV logger starts logs/metrics.csv afresh: keep the part before a resume beside it."""
    log = run_dir / "logs" / "metrics.csv"
    if log.is_file():
        n = len(list(log.parent.glob("metrics.part*.csv"))) + 1
        os.replace(log, log.with_name(f"metrics.part{n}.csv"))


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)


def base_model_dir(model: Optional[str]) -> tuple[str, Optional[dict[str, Any]]]:
    """(base model folder, run.json or None) for a --model that is a model folder or a run folder."""
    if not model:
        raise LightftError("--model is required: a model folder (config.json, model.safetensors, tokenizer.json) "
                           "or a run folder")
    if is_run_dir(model):
        info = read_run(model)
        return info["base_model"], info
    if not Path(model).is_dir():
        raise LightftError(f"{model}: model folder not found")
    return model, None


def build_module(task: str, base_dir: str, opts: Options, task_args: dict[str, Any]) -> TaskModule:
    spec = get_task(task)
    backbone = load_model(base_dir, dtype=opts.dtype)
    torch.manual_seed(opts.seed)  # LoRA and head initialisation are reproducible
    prepare_backbone(backbone, opts)
    module = spec.module(backbone, opts, **task_args)
    return module


def load_run_module(run_dir: str, overrides: Optional[dict[str, Any]] = None) -> tuple[TaskModule, dict[str, Any]]:
    """Rebuild a trained module from its run folder (base weights + trained tensors)."""
    info = read_run(run_dir)
    opts = Options.from_dict({**info["options"], **(overrides or {})}, f"{run_dir}/{RUN_FILE}")
    module = build_module(info["task"], info["base_model"], opts, info.get("task_state", {}))
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise LightftError(f"{run_dir}: no {WEIGHTS_FILE}; the run did not finish (resume it with --resume)")
    module.load_trainable(read_weights(weights), str(weights))
    return module, info


def make_trainer(opts: Options, run_dir: Optional[Path], monitor: str, mode: str, for_training: bool) -> L.Trainer:
    """The Lightning Trainer. Training uses --devices/--num-nodes/--strategy; eval and predict one device."""
    callbacks: list[L.Callback] = []
    logger: Any = False
    if for_training:
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        ckpt_dir = run_dir / "checkpoints"
        callbacks += [
            ModelCheckpoint(dirpath=ckpt_dir, filename=Path(BEST).stem, monitor=monitor, mode=mode, save_last=False,
                            save_top_k=1, enable_version_counter=False),
            PeriodicCheckpoint(ckpt_dir, opts.checkpoint_every),
            RngState(),
            DataPosition(),
            LearningRateMonitor(logging_interval="step"),
            Throughput(window=max(1, opts.log_every)),
        ]
        logger = CSVLogger(save_dir=str(run_dir), name="logs", version="")
    devices: Any = opts.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    distributed = dict(devices=devices, num_nodes=opts.num_nodes, strategy=build_strategy(opts)) if for_training \
        else dict(devices=1, num_nodes=1, strategy="auto")
    settings = dict(
        accelerator=opts.accelerator,
        **distributed,
        plugins=[AtomicCheckpointIO()],
        precision=opts.precision,
        max_epochs=opts.epochs,
        max_steps=opts.max_steps,
        accumulate_grad_batches=opts.grad_accum,
        gradient_clip_val=opts.grad_clip or None,
        val_check_interval=opts.val_every * opts.grad_accum if opts.val_every else None,
        check_val_every_n_epoch=None if opts.val_every else 1,
        log_every_n_steps=opts.log_every,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=for_training,
        enable_progress_bar=opts.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir) if run_dir else None,
    )
    try:
        return L.Trainer(**settings)
    except (ValueError, TypeError, RuntimeError) as e:  # Lightning's word on impossible hardware settings
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LightftError(f"--accelerator {opts.accelerator} --devices {opts.devices} --strategy {opts.strategy} "
                           f"--precision {opts.precision}: {first}") from None


def _jsonable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def train(task: str, opts: Options) -> dict[str, Any]:
    """Fine-tune, keep the best weights, evaluate them, and fill the run folder. Returns the metrics.

    Multi-process runs: see lightft/train/distributed.py for who prepares the run folder and the
    tokenised data; only global rank 0 writes files.
    """
    spec = get_task(task)
    check_train_options(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    base_dir, init_info = base_model_dir(opts.model)
    run_dir = Path(opts.out)
    seed_everything(opts.seed)
    trainer = make_trainer(opts, run_dir, spec.module.monitor, spec.module.monitor_mode, for_training=True)
    with rank_zero_first(trainer) as first:
        owner = first and not prepared_by_parent()  # the one process that creates the run folder
        if owner:
            prepare_run_dir(opts)
        try:
            tokenizer = load_tokenizer(base_dir)
            dm = spec.datamodule(tokenizer, opts, train_file=opts.train, val_file=opts.val)
            if first:
                dm.prepare_data()
            dm.setup("fit")
            module = build_module(task, base_dir, opts, dm.task_args())
            init = opts.init or (opts.model if init_info else None)
            if init:
                init_weights(module, init)
        except BaseException:
            if owner and not opts.resume:
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-written on bad input
            raise
        if owner:
            info = {"task": task, "base_model": str(Path(base_dir).resolve()), "lightft_version": __version__,
                    "options": opts.to_dict(), "task_state": module.task_state(), "data": dm.stats,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if opts.resume:  # keep the original record and the log so far; note the resume
                info = {**read_run(str(run_dir)), "resumed": time.strftime("%Y-%m-%dT%H:%M:%S")}
                keep_earlier_log(run_dir)
            write_atomic_json(run_dir / RUN_FILE, info)
    start = time.perf_counter()
    ckpt = str(run_dir / "checkpoints" / LAST) if opts.resume else None
    try:
        with children_see_prepared():  # ranks Lightning starts in fit read what this process prepared
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except FloatingPointError as e:
        last = run_dir / "checkpoints" / LAST
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise LightftError(f"training stopped: {e}; {kept}") from None
    train_seconds = time.perf_counter() - start
    best = run_dir / "checkpoints" / BEST
    if best.is_file():
        module.load_trainable(load_checkpoint_file(best)["state_dict"], str(best))
    metrics = _jsonable(trainer.validate(module, datamodule=dm, verbose=False)[0])
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    metrics.update({"train_seconds": round(train_seconds, 1), "steps": trainer.global_step,
                    "train_tokens": throughput.global_tokens(trainer) if throughput else None})
    if trainer.is_global_zero:
        save_weights(module, run_dir / WEIGHTS_FILE)
        write_atomic_json(run_dir / "metrics.json", metrics)
    return metrics


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A run's weights.safetensors (never a pickle); a missing or damaged file is a one-line error."""
    if not path.is_file():
        raise LightftError(f"{path}: missing; the run did not finish (resume it with --resume)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for damaged headers
        raise LightftError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]}); "
                           "the file is truncated or corrupt") from None


def save_weights(module: TaskModule, path: Path) -> None:
    """The trainable tensors as safetensors, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in module.trainable_state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def init_weights(module: TaskModule, run_dir: str) -> None:
    """--init: copy an earlier run's trained tensors; head tensors of another shape stay fresh (reported)."""
    if not is_run_dir(run_dir):
        raise LightftError(f"--init {run_dir}: not a run folder (no {RUN_FILE})")
    state = read_weights(Path(run_dir) / WEIGHTS_FILE)
    own = module.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape and k.startswith("head.")]
    state = {k: v for k, v in state.items() if k not in skipped}
    module.load_trainable(state, f"{run_dir}/{WEIGHTS_FILE}")
    if skipped:
        print(f"[init] head tensors of another shape left freshly initialised: {', '.join(skipped)}", file=sys.stderr)


def module_for(task: str, model: str, opts: Options) -> tuple[TaskModule, Any, dict[str, Any]]:
    """A module for eval/predict: a trained run folder, or a base model with a fresh head."""
    if is_run_dir(model):
        module, info = load_run_module(model, {"progress": opts.progress, "batch_size": opts.batch_size,
                                               "eval_batch_size": opts.eval_batch_size, "precision": opts.precision})
        if info["task"] != task:
            raise LightftError(f"{model}: this run was trained for task {info['task']!r}, not {task!r}")
        return module, load_tokenizer(info["base_model"]), Options.from_dict(info["options"])
    return None, load_tokenizer(model), opts


def evaluate(task: str, model: str, data: str, opts: Options) -> dict[str, float]:
    """Metrics of a run (or of a base model with an untrained head, as a 'before' figure) on `data`."""
    spec = get_task(task)
    seed_everything(opts.seed)
    module, tokenizer, run_opts = module_for(task, model, opts)
    eval_opts = Options.from_dict({**run_opts.to_dict(), "batch_size": opts.batch_size,
                                   "eval_batch_size": opts.eval_batch_size, "limit_val": opts.limit_val,
                                   "progress": opts.progress, "format": opts.format or run_opts.format})
    task_state = module.task_state() if module is not None else {}
    dm = spec.datamodule(tokenizer, eval_opts, eval_file=data, **spec.datamodule.eval_args(task_state))
    dm.prepare_data()
    dm.setup("test")
    if module is None:
        module = build_module(task, model, opts, dm.task_args())
    trainer = make_trainer(eval_opts, None, module.monitor, module.monitor_mode, for_training=False)
    results = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {k.removeprefix("test_"): v for k, v in _jsonable(results).items()}


def predict(task: str, model: str, data: str, opts: Options) -> list[dict[str, Any]]:
    spec = get_task(task)
    module, tokenizer, run_opts = module_for(task, model, opts)
    if module is None:
        raise LightftError(f"{model}: predict needs a trained run folder (lightft train {task} ... --out RUN)")
    eval_opts = Options.from_dict({**run_opts.to_dict(), "batch_size": opts.batch_size,
                                   "eval_batch_size": opts.eval_batch_size, "progress": False,
                                   "format": opts.format or run_opts.format})
    dm = spec.datamodule(tokenizer, eval_opts, eval_file=data, **spec.datamodule.eval_args(module.task_state()))
    dm.prepare_data()
    dm.setup("predict")
    trainer = make_trainer(eval_opts, None, module.monitor, module.monitor_mode, for_training=False)
    batches = trainer.predict(module, datamodule=dm)
    return [rec for batch in batches for rec in batch]


def dump_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
