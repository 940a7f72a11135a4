"""Training never reports success on failure and never loses work to a signal (lightft/train/signals.py):
SIGTERM and Ctrl-C save a checkpoint at the next optimiser-step boundary and exit 143 / 130 with the
`--resume` command, which ends with the uninterrupted run's weights; SLURM's requeue signal also
requeues the job, whose rerun of the same command continues the run; a crash mid-fit leaves a run
that `--resume` restarts; a second training on the same --out fails at once, naming the first."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_run import REPO, SLOW_CLI, make_tiny_model, run_in_process, write_classify_jsonl



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    make_tiny_model(d / "bert", hidden_dropout_prob=0.1)  # dropout: the RNG state must come back too
    write_classify_jsonl(d / "train.jsonl", 48)
    write_classify_jsonl(d / "val.jsonl", 12, seed=1)
    return d


def train_args(d: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "classify", "--model", str(d / "bert"), "--train", str(d / "train.jsonl"), "--val",
            str(d / "val.jsonl"), "--out", str(out), "--full", "--batch-size", "4", "--epochs", "2",
            "--checkpoint-every", "5", "--threads", "1", "--no-progress", "--lr", "1e-3", *extra]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def start_slow(args: list[str], cache: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(cache),
                                 "OMP_NUM_THREADS": "1", **env})


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read()[-2000:]}"


@pytest.mark.parametrize("sig, code, accum", [(signal.SIGTERM, 143, "2"), (signal.SIGINT, 130, "1")],
                         ids=["SIGTERM-grad-accum-2", "SIGINT"])
def test_a_signal_saves_a_checkpoint_exits_non_zero_and_resume_is_exact(setup, tmp_path, monkeypatch, sig, code,
                                                                         accum):
    d, cache = setup, tmp_path / "cache"
    run_in_process(train_args(d, tmp_path / "ref", "--grad-accum", accum), cache, monkeypatch)
    out = tmp_path / "stopped"
    proc = start_slow(train_args(d, out, "--grad-accum", accum), cache)
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    time.sleep(random.SystemRandom().uniform(0.0, 0.2))  # anywhere in a step, or in gradient accumulation
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"error: stopped by {sig.name}: saved {out}/checkpoints/last.ckpt at step "), last_line
    assert "Traceback" not in err
    step = int(last_line.split(" at step ")[1].split(";")[0])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert not (out / "weights.safetensors").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "training"
    command = last_line.split("continue with: ")[1]
    assert command.endswith(" --resume") and "--overwrite" not in command
    run_in_process(shlex.split(command)[1:], cache, monkeypatch)  # the printed command, as a user would run it
    same_weights(tmp_path / "ref", out)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


REFERENCES: dict[tuple[str, ...], Path] = {}


def reference(setup: Path, tmp_path_factory, extra: tuple[str, ...]) -> Path:
    """The uninterrupted run with `extra` options, trained once per module."""
    if extra not in REFERENCES:
        out = tmp_path_factory.mktemp("ref") / "run"
        with pytest.MonkeyPatch.context() as mp:
            run_in_process(train_args(setup, out, *extra), setup / "cache", mp)
        REFERENCES[extra] = out
    return REFERENCES[extra]


ACCUM, VALIDATE = ("--grad-accum", "2"), ("--val-every", "5", "--checkpoint-every", "3")


@pytest.mark.parametrize("extra, micro_batch, step", [
    (ACCUM, 7, 4), (ACCUM, 12, 6), (ACCUM, 24, 12), (VALIDATE, 5, 5), (VALIDATE, 15, 15)],
    ids=["mid-epoch", "last-step-of-an-epoch", "last-step-of-the-run", "step-before-validation",
         "periodic-save-before-validation"])
def test_a_signal_in_any_step_resumes_exactly(setup, tmp_path_factory, tmp_path, monkeypatch, extra, micro_batch,
                                               step):
    """The signal lands in a chosen micro-batch (deterministic, unlike the timed test above). A step that ends
    an epoch, or that validation follows, stops after the epoch end / the validation: Lightning resumes a
    checkpoint taken in the batch's own hooks out of step (it would skip that validation, or redo the end of
    the epoch)."""
    import lightft.tasks.module as m

    ref = reference(setup, tmp_path_factory, extra)
    real, seen = m.TaskModule.training_step, {"n": 0}

    def signalled(self, batch, batch_idx):
        seen["n"] += 1
        if seen["n"] == micro_batch:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, batch_idx)

    out, args = tmp_path / "stopped", train_args(setup, tmp_path / "stopped", *extra)
    monkeypatch.setattr(m.TaskModule, "training_step", signalled)
    with pytest.raises(SystemExit) as stop:
        run_in_process(args, setup / "cache", monkeypatch)
    assert stop.value.code == 143
    monkeypatch.setattr(m.TaskModule, "training_step", real)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    run_in_process([*args, "--resume"], setup / "cache", monkeypatch)
    same_weights(ref, out)


FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/scontrol.calls"
"""


def test_slurm_requeue_signal_checkpoints_requeues_and_the_rerun_continues(setup, tmp_path, monkeypatch):
    """Lightning's SLURM auto-requeue: SIGUSR1 (--requeue-signal) saves, runs `scontrol requeue JOB`; the
    requeued job runs the same command line (here with --overwrite, which must not wipe the run)."""
    d, cache = setup, tmp_path / "cache"
    run_in_process(train_args(d, tmp_path / "ref"), cache, monkeypatch)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lightft", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "requeued"
    args = train_args(d, out, "--overwrite")
    proc = start_slow(args, cache, **slurm)
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert "SLURM job 4242 requeued" in err.strip().splitlines()[-1]
    assert (bin_dir / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 24

    for k, v in slurm.items():  # the requeued job: same job id, same command line
        monkeypatch.setenv(k, v)
    run_in_process(args, cache, monkeypatch)
    same_weights(tmp_path / "ref", out)
    assert len(json.loads((out / "run.json").read_text())["resumed"]) == 1


def test_a_crash_mid_fit_leaves_a_run_that_resume_restarts(setup, tmp_path, monkeypatch, capsys):
    import lightft.tasks.module as m

    d, cache = setup, tmp_path / "cache"
    run_in_process(train_args(d, tmp_path / "ref"), cache, monkeypatch)
    out = tmp_path / "crashed"
    step = m.TaskModule.training_step

    def crash(self, batch, batch_idx):
        if batch_idx == 3:  # before the first checkpoint (step 5)
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(m.TaskModule, "training_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_in_process(train_args(d, out), cache, monkeypatch)
    monkeypatch.setattr(m.TaskModule, "training_step", step)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_in_process(train_args(d, out), cache, monkeypatch)
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds an unfinished run (stopped before its first checkpoint)" in line and "add --resume" in line, line
    run_in_process(train_args(d, out, "--resume"), cache, monkeypatch)  # the hint works: it trains from step 0
    assert "training again from step 0" in capsys.readouterr().err
    same_weights(tmp_path / "ref", out)


def test_a_second_training_on_the_same_out_fails_at_once_naming_the_first(setup, tmp_path, monkeypatch, capsys):
    d, cache = setup, tmp_path / "cache"
    out = tmp_path / "shared"
    first = start_slow(train_args(d, out), cache)
    try:
        wait_for(tmp_path / ".shared.lightft-lock", first)
        time.sleep(0.5)  # its details are written just after the lock is taken
        with pytest.raises(SystemExit) as stop:
            run_in_process(train_args(d, out), cache, monkeypatch)
        assert stop.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"another lightft process is writing it (pid {first.pid} on " in line, line
        assert "lightft train classify" in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode in (143, -signal.SIGTERM)
