"""Training with Lightning: the flow every task shares (the run folder itself: lightft/runs/folder.py;
evaluating and predicting with a finished run: lightft/evaluate.py)."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch

from lightft import __version__
from lightft.checkpoint import write_atomic_json
from lightft.errors import LightftError
from lightft.options import Options
from lightft.precision import device_type, resolve_precision
from lightft.runs.backbone import load_backbone, prepare_backbone
from lightft.runs.checkpoint_file import BEST, LAST, load_checkpoint_file
from lightft.runs.defaults import resolve_auto
from lightft.runs.folder import (RUN_FILE, WEIGHTS_FILE, check_train_options, is_run_dir, keep_earlier_log,
                                 prepare_run_dir, read_run, save_weights)
from lightft.runs.load import chain_state, init_source
from lightft.tasks.module import TaskModule
from lightft.tokenizer import load_tokenizer
from lightft.train.callbacks import DataPosition, StepBoundProgressBar, Throughput, ValidateAtMaxSteps
from lightft.train.checkpointing import AtomicCheckpointIO, PeriodicCheckpoint, RngState
from lightft.train.distributed import build_strategy, children_see_prepared, prepared_by_parent, rank_zero_first
from lightft.train.mixed import BF16Mixed
from lightft.train.registry import get_task
from lightft.train.report_files import data_record, write_extras
from lightft.train.timing import PhaseClock, TimeSplit


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)


def base_model_dir(model: Optional[str]) -> str:
    """The base model folder of a --model that is a model folder or a run folder."""
    if not model:
        raise LightftError("--model is required: a model folder (config.json, model.safetensors, tokenizer.json) "
                           "or a run folder")
    if is_run_dir(model):
        return read_run(model)["base_model"]
    if not Path(model).is_dir():
        raise LightftError(f"{model}: model folder not found")
    return model


def build_module(task: str, base_dir: str, opts: Options, task_args: dict[str, Any]) -> TaskModule:
    """A task module on a freshly loaded base model: adapters set up, head freshly initialised."""
    spec = get_task(task)
    opts = resolve_auto(task, opts)  # a no-op for a training run's options, resolved in `train`
    backbone = load_backbone(base_dir, opts)
    torch.manual_seed(opts.seed)  # LoRA and head initialisation are reproducible
    prepare_backbone(backbone, opts)
    return spec.module(backbone, opts, **task_args)


def apply_init_run(module: TaskModule, run_dir: str) -> None:
    """--init: lay an earlier run's trained tensors (and those of its own chain) over `module`.

    Head tensors of another task or shape stay fresh (reported); a LoRA run continues the same
    adapter when the targets and rank match (see README, transfer learning).
    """
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    module.load_trainable(chain_state(run_dir, module.task, shapes), f"{run_dir}/{WEIGHTS_FILE}")


def make_trainer(opts: Options, run_dir: Optional[Path], monitor: str, mode: str, for_training: bool,
                 clock: Optional[PhaseClock] = None) -> L.Trainer:
    """The Lightning Trainer. Training uses --devices/--num-nodes/--strategy; eval and predict one device.
    `clock`: the run's PhaseClock (training), which validation and checkpoint writes report to."""
    callbacks: list[L.Callback] = []
    logger: Any = False
    precision = resolve_precision(opts.precision, opts.accelerator)  # already concrete for a training run
    if for_training:
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        ckpt_dir = run_dir / "checkpoints"
        callbacks += [
            # best.ckpt: the trained tensors only (resume reads last.ckpt, which holds the optimiser state too)
            ModelCheckpoint(dirpath=ckpt_dir, filename=Path(BEST).stem, monitor=monitor, mode=mode, save_last=False,
                            save_top_k=1, enable_version_counter=False, save_weights_only=True),
            PeriodicCheckpoint(ckpt_dir, opts.checkpoint_every),
            RngState(),
            DataPosition(),
            LearningRateMonitor(logging_interval="step"),
            Throughput(window=max(1, opts.log_every), clock=clock),
            ValidateAtMaxSteps(),
        ]
        if clock is not None:
            callbacks.append(TimeSplit(clock))
        if opts.progress:
            callbacks.append(StepBoundProgressBar())
        logger = [CSVLogger(save_dir=str(run_dir), name="logs", version="")]  # plot and report read its CSV
        if opts.logger == "tensorboard":  # event files in RUN/logs/tensorboard, beside the CSV
            if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
                raise LightftError("--logger tensorboard needs the tensorboard package: pip install tensorboard")
            from lightning.pytorch.loggers import TensorBoardLogger

            logger.append(TensorBoardLogger(save_dir=str(run_dir / "logs"), name="tensorboard", version="",
                                            default_hp_metric=False))
    devices: Any = opts.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    distributed = dict(devices=devices, num_nodes=opts.num_nodes, strategy=build_strategy(opts)) if for_training \
        else dict(devices=1, num_nodes=1, strategy="auto")
    # bf16-mixed through our plugin (fused AdamW may clip under it); any other precision by its name
    precision_plugins = [BF16Mixed("cuda" if device_type(opts.accelerator) == "cuda" else "cpu")] \
        if precision == "bf16-mixed" else []
    settings = dict(
        accelerator=opts.accelerator,
        **distributed,
        plugins=[AtomicCheckpointIO(clock), *precision_plugins],
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
    if not precision_plugins:
        settings["precision"] = precision
    try:
        return L.Trainer(**settings)
    except (ValueError, TypeError, RuntimeError) as e:  # Lightning's word on impossible hardware settings
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LightftError(f"--accelerator {opts.accelerator} --devices {opts.devices} --strategy {opts.strategy} "
                           f"--precision {precision}: {first}") from None


def jsonable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def train(task: str, opts: Options) -> dict[str, Any]:
    """Fine-tune, keep the best weights, evaluate them, and fill the run folder. Returns the metrics.

    Multi-process runs: see lightft/train/distributed.py for who prepares the run folder and the
    tokenised data; only global rank 0 writes files. The auto options (lightft/runs/defaults.py) are
    made concrete first, so run.json, the resume checks and every rank see the same values.
    """
    clock = PhaseClock()
    spec = get_task(task)
    check_train_options(opts)
    recorded = read_run(opts.out)["options"] if opts.resume and is_run_dir(opts.out) else None
    opts = resolve_auto(task, opts, recorded)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    base_dir = base_model_dir(opts.model)
    run_dir = Path(opts.out)
    seed_everything(opts.seed)
    trainer = make_trainer(opts, run_dir, spec.module.monitor, spec.module.monitor_mode, for_training=True,
                           clock=clock)
    with rank_zero_first(trainer) as first:
        owner = first and not prepared_by_parent()  # the one process that creates the run folder
        if owner:
            prepare_run_dir(opts)
        try:
            with clock.phase("load"):
                tokenizer = load_tokenizer(base_dir)
            with clock.phase("data"):
                dm = spec.datamodule(tokenizer, opts, train_file=opts.train, val_file=opts.val)
                if first:
                    dm.prepare_data()
                dm.setup("fit")
            with clock.phase("load"):
                module = build_module(task, base_dir, opts, dm.task_args())
                init = init_source(opts.to_dict())
                if init:
                    apply_init_run(module, init)
        except BaseException:
            if owner and not opts.resume:
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-written on bad input
            raise
        if owner:
            if opts.resume:  # keep the original record and the log so far; note the resume
                info = {**read_run(str(run_dir)), "resumed": time.strftime("%Y-%m-%dT%H:%M:%S")}
                keep_earlier_log(run_dir)
            else:
                info = {"task": task, "base_model": str(Path(base_dir).resolve()), "lightft_version": __version__,
                        "options": opts.to_dict(), "task_state": module.task_state(), "data": data_record(dm),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_atomic_json(run_dir / RUN_FILE, info)
    start = time.perf_counter()
    ckpt = str(run_dir / "checkpoints" / LAST) if opts.resume else None
    try:
        with children_see_prepared(), clock.phase("steps"):  # ranks Lightning starts in fit read what this one prepared
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except FloatingPointError as e:
        last = run_dir / "checkpoints" / LAST
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise LightftError(f"training stopped: {e}; {kept}") from None
    train_seconds = time.perf_counter() - start
    best = run_dir / "checkpoints" / BEST
    with clock.phase("checkpoints"):
        best_ckpt = load_checkpoint_file(best) if best.is_file() else None
    last_val = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    if best_ckpt is not None and best_ckpt.get("global_step") == trainer.global_step and last_val:
        metrics = jsonable(last_val)  # the best weights are the final ones, validated a moment ago
    else:
        if best_ckpt is not None:
            module.load_trainable(best_ckpt["state_dict"], str(best))
        with clock.phase("validation"):
            metrics = jsonable(trainer.validate(module, datamodule=dm, verbose=False)[0])
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    metrics.update({"train_seconds": round(train_seconds, 1), "steps": trainer.global_step,
                    **(throughput.summary(trainer) if throughput else {})})
    if trainer.is_global_zero:
        with clock.phase("checkpoints"):
            save_weights(module.trainable_state_dict(), run_dir / WEIGHTS_FILE)
        write_atomic_json(run_dir / "metrics.json", metrics)  # report.html (write_extras) reads it
        with clock.phase("report"):
            write_extras(run_dir, module, dm, tokenizer, trainer)
        metrics["time_split"] = clock.split()
        write_atomic_json(run_dir / "metrics.json", metrics)
    return metrics
