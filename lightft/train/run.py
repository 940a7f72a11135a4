"""Training with Lightning: the flow every task shares (the run folder itself: lightft/runs/folder.py;
evaluating and predicting with a finished run: lightft/evaluate.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lightft import __version__
from lightft.checkpoint import read_model_config, write_atomic_json
from lightft.config import check_max_length
from lightft.errors import LightftError
from lightft.options import Options
from lightft.precision import device_type, pure_bf16_training_warning, resolve_precision
from lightft.runs.backbone import load_backbone, prepare_backbone
from lightft.runs.checkpoint_file import BEST, LAST, load_checkpoint_file
from lightft.runs.data_identity import check_same_data, data_hashes
from lightft.runs.defaults import base_trains, resolve_auto
from lightft.runs.folder import (RUN_FILE, WEIGHTS_FILE, check_run_dir, check_train_options, clean_partial_files,
                                 is_run_dir, keep_earlier_log, read_run, save_weights)
from lightft.runs.load import chain_inputs, chain_state, init_source
from lightft.runs.safe_output import check_not_input, claim, new_folder
from lightft.tasks.module import TaskModule
from lightft.tokenizer import load_tokenizer
from lightft.train.allocator import reuse_freed_memory
from lightft.train.callbacks import DataPosition, StepBoundProgressBar, Throughput, ValidateAtMaxSteps
from lightft.train.checkpointing import AtomicCheckpointIO, PeriodicCheckpoint, RngState
from lightft.train.distributed import (build_strategy, check_nodes, children_see_prepared, cluster_plugins,
                                      parent_resumed, prepared_by_parent, rank_zero_first)
from lightft.train.ema import WeightEMA
from lightft.train.mixed import BF16Mixed
from lightft.train.teachers import attach_teacher_targets, teacher_paths
from lightft.train.signals import (SignalWatch, Signalled, StopOnSignal, TrainingStopped, requeue_job,
                                   requeue_signal_of, requeued_restart, resume_command, slurm_job_id)
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
                 clock: Optional[PhaseClock] = None, watch: Optional[SignalWatch] = None) -> L.Trainer:
    """The Lightning Trainer. Training uses --devices/--num-nodes/--strategy; eval and predict one device.
    `clock`: the run's PhaseClock (training), which validation and checkpoint writes report to.
    `watch` (training): the stop signals, acted on at optimiser-step boundaries (StopOnSignal)."""
    callbacks: list[L.Callback] = []
    logger: Any = False
    precision = resolve_precision(opts.precision, opts.accelerator)  # already concrete for a training run
    if for_training:
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        ckpt_dir = run_dir / "checkpoints"
        if opts.ema:  # first: the average is updated before a periodic checkpoint of the same step is written
            callbacks.append(WeightEMA(opts.ema))
        callbacks += [
            # best.ckpt: the trained tensors only (resume reads last.ckpt, which holds the optimiser state too)
            ModelCheckpoint(dirpath=ckpt_dir, filename=Path(BEST).stem, monitor=monitor, mode=mode, save_last=False,
                            save_top_k=1, enable_version_counter=False, save_weights_only=True),
            PeriodicCheckpoint(ckpt_dir, opts.checkpoint_every),
            *([StopOnSignal(watch, ckpt_dir)] if watch is not None else []),
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
        plugins=[AtomicCheckpointIO(clock), *precision_plugins, *cluster_plugins(opts, for_training)],
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
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as e:  # impossible hardware settings
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LightftError(f"--accelerator {opts.accelerator} --devices {opts.devices} --strategy {opts.strategy} "
                           f"--precision {precision}: {first}") from None


def jsonable(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def train(task: str, opts: Options, inputs: Sequence[Optional[str]] = ()) -> dict[str, Any]:
    """Fine-tune, keep the best weights, evaluate them, and fill the run folder. Returns the metrics.

    Nothing at --out changes until every input has been read and checked: the options, the folder
    (new, --resume, or --overwrite of a run lightft wrote), the data, the model and --init. Then the
    new run folder (marker + run.json) is built in a temporary sibling and put in place in one step;
    an --overwrite'n run stays whole until that moment, and a failure or kill after it leaves a run that
    `--resume` continues (from step 0 if no checkpoint was saved yet). The process that creates the
    folder holds its lock until the end (lightft/runs/safe_output.py); `inputs` are more files that
    must not be replaced (the --config file). Signals: lightft/train/signals.py. Multi-process runs:
    lightft/train/distributed.py; only global rank 0 writes files. The auto options
    (lightft/runs/defaults.py) are made concrete first, so run.json, the resume checks and every rank
    see the same values; `clock` splits the run's time into phases for metrics.json.
    """
    clock = PhaseClock()
    spec = get_task(task)
    check_train_options(opts)
    opts = resolve_auto(task, opts, continued_options(opts))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    base_dir = base_model_dir(opts.model)
    run_dir = Path(opts.out)
    seed_everything(opts.seed)
    watch = SignalWatch(requeue_signal_of(opts.requeue_signal))
    trainer = make_trainer(opts, run_dir, spec.module.monitor, spec.module.monitor_mode, for_training=True,
                           clock=clock, watch=watch)
    check_nodes(trainer, opts)
    warning = pure_bf16_training_warning(opts.precision, base_trains(opts))
    if warning and trainer.is_global_zero:
        print(warning, file=sys.stderr)
    with contextlib.ExitStack() as held, watch.active():
        try:
            with rank_zero_first(trainer) as shared:
                owner = shared.first and not prepared_by_parent()  # the one process that creates the run folder
                if owner:
                    run_dir = held.enter_context(claim(run_dir, "--out"))
                    opts = plan_run(opts, run_dir, [opts.model, base_dir, opts.train, opts.val, *inputs,
                                                    *chain_inputs(opts.init), *chain_inputs(opts.model),
                                                    *teacher_paths(opts, task)])
                    shared.resume = opts.resume
                elif parent_resumed() or shared.resume:
                    opts = dataclasses.replace(opts, resume=True, overwrite=False)
                with clock.phase("load"):
                    tokenizer = load_tokenizer(base_dir)
                with clock.phase("data"):
                    dm = spec.datamodule(tokenizer, opts, train_file=opts.train, val_file=opts.val)
                    if owner:
                        data_files = data_hashes({split: dm.source_files(path) for split, path in
                                                  (("train", opts.train), ("val", opts.val)) if path})
                        previous = read_run(str(run_dir)) if opts.resume else None
                        changed = check_same_data(previous, data_files, run_dir, opts.allow_data_change) \
                            if previous else []
                    if shared.first:
                        dm.prepare_data()
                    dm.setup("fit")
                if opts.teachers:
                    with clock.phase("teachers"):
                        attach_teacher_targets(dm, task, opts)
                check_positions(base_dir, opts, dm)
                with clock.phase("load"):
                    module = build_module(task, base_dir, opts, dm.task_args())
                    init = init_source(opts.to_dict())
                    if init:
                        apply_init_run(module, init)
                if owner:
                    info = {"task": task, "base_model": str(Path(base_dir).resolve()), "lightft_version": __version__,
                            "options": opts.to_dict(), "task_state": module.task_state(), "data": data_record(dm),
                            "data_files": data_files, "status": "training", "slurm_job_id": slurm_job_id(),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                    if previous is not None:
                        check_same_task_state(previous, info, run_dir)
                        info = {**previous, "status": "training", "data_files": data_files,
                                "resumed": [*resumes(previous), {"at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                                 "data_changed": changed}]}
                        clean_partial_files(run_dir)
                        keep_earlier_log(run_dir)
                        write_atomic_json(run_dir / RUN_FILE, info)
                    else:
                        with new_folder(run_dir, "run") as tmp:  # replaces an --overwrite'n run in one step
                            write_atomic_json(tmp / RUN_FILE, info)
            return fit_and_finish(trainer, module, dm, tokenizer, opts, run_dir, watch, clock)
        except Signalled as stop:
            raise stopped(stop, task, run_dir, trainer, watch) from None


def check_positions(base_dir: str, opts: Options, dm: Any) -> None:
    """Refuse, before training, tokenised examples longer than the model's learned position table (an
    IndexError mid-fit otherwise; `generate` checks the same limit). Only examples that really run past the
    table are refused: the default --max-length may exceed a small model's table as long as the data fits.
    Rotary models compute any position and are left alone, as in `generate`."""
    cfg = read_model_config(base_dir)
    limit = cfg.max_tokens()
    if limit is None:
        return
    longest = max((len(e[dm.length_key]) for data in dm.datasets.values() for e in data), default=0)
    if longest > limit:
        check_max_length(cfg, opts.max_length)  # names --max-length and the limit
        raise LightftError(f"the data holds an example of {longest} tokens; the model's positions allow {limit}; "
                           f"use --max-length {limit} or less")


def continued_options(opts: Options) -> Optional[dict[str, Any]]:
    """The options recorded by the run this command continues (`--resume`, or the requeued SLURM job that
    wrote it), else None. Their concrete values replace "auto": a requeued job may restart on a node of
    another kind, and must not switch the run's precision midway."""
    if not opts.out or not is_run_dir(opts.out):
        return None
    info = read_run(opts.out)
    return info["options"] if opts.resume or requeued_restart(info) else None


def plan_run(opts: Options, run_dir: Path, inputs: Sequence[Optional[str]]) -> Options:
    """The checks on --out before anything is read (the lock is held). A SLURM job restarted after a
    requeue runs its command line again: it continues its own run, whatever --overwrite says."""
    if not opts.resume and is_run_dir(str(run_dir)) and requeued_restart(read_run(str(run_dir))):
        print(f"[lightft] SLURM job {slurm_job_id()} restarted: continuing {run_dir} from its last checkpoint",
              file=sys.stderr)
        opts = dataclasses.replace(opts, resume=True, overwrite=False)
    if not opts.resume:
        check_not_input(run_dir, inputs, "--out")
    check_run_dir(opts, run_dir)
    return opts


def check_same_task_state(previous: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    """The task state (label names...) fixes the head's shape: a resume cannot change it."""
    before, after = previous.get("task_state", {}), json.loads(json.dumps(now["task_state"]))  # as run.json holds it
    if before != after:
        key = next((k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)), "?")
        raise LightftError(f"{run_dir}: --resume on data with another {key} ({str(before.get(key))[:80]} -> "
                           f"{str(after.get(key))[:80]}); the trained head cannot change; start a new run instead")


def resumes(info: dict[str, Any]) -> list[Any]:
    earlier = info.get("resumed", [])
    return earlier if isinstance(earlier, list) else [earlier]


def fit_and_finish(trainer: L.Trainer, module: TaskModule, dm: Any, tokenizer: Any, opts: Options,
                   run_dir: Path, watch: SignalWatch, clock: PhaseClock) -> dict[str, Any]:
    """`fit` (from the last checkpoint on --resume), evaluate the best weights, write weights and metrics."""
    start = time.perf_counter()
    last = run_dir / "checkpoints" / LAST
    ckpt = str(last) if opts.resume and last.is_file() else None
    if opts.resume and ckpt is None and trainer.is_global_zero:
        print(f"[lightft] {run_dir}: no checkpoint yet; training again from step 0", file=sys.stderr)
    try:
        # ranks Lightning starts read what this one prepared; --kernels auto: steps reuse the memory they free
        with children_see_prepared(opts.resume), clock.phase("steps"), reuse_freed_memory(opts.kernels == "auto"):
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    except FloatingPointError as e:
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise LightftError(f"training stopped: {e}; {kept}") from None
    if watch.received is not None:  # it came after the last step: the epoch-end checkpoint is the last state
        raise Signalled(watch.received, last if last.is_file() else None, trainer.global_step)
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
        write_atomic_json(run_dir / RUN_FILE, {**read_run(str(run_dir)), "status": "finished",
                                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return metrics


def stopped(stop: Signalled, task: str, run_dir: Path, trainer: L.Trainer, watch: SignalWatch) -> TrainingStopped:
    """The one line a stop signal ends with: what was saved and how to continue (or that SLURM requeued)."""
    name = signal.Signals(stop.signum).name
    if not (run_dir / RUN_FILE).is_file():
        return TrainingStopped(f"stopped by {name} before training started; nothing was written", stop.signum)
    last = run_dir / "checkpoints" / LAST
    if stop.checkpoint is not None:
        saved = f"saved {stop.checkpoint} at step {stop.step}"
    elif last.is_file():
        saved = f"the last checkpoint is {last}"
    else:
        saved = "no checkpoint was saved yet (a resume starts from step 0)"
    if stop.signum == watch.requeue:
        if trainer.is_global_zero:
            return TrainingStopped(f"stopped by {name}: {saved}; {requeue_job()}", stop.signum)
        return TrainingStopped(f"stopped by {name}: {saved}; rank 0 requeues the job", stop.signum)
    return TrainingStopped(f"stopped by {name}: {saved}; continue with: {resume_command(task)}", stop.signum)
