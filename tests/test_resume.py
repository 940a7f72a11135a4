"""Never lose work: a run killed with SIGKILL and resumed ends with the same weights as an uninterrupted
run; checkpoints are atomic, hold only trainable tensors + plain values, and load with weights_only."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_run import REPO, SLOW_CLI, make_tiny_model, needs_lora, run_in_process, write_classify_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    make_tiny_model(d / "bert", hidden_dropout_prob=0.1)  # dropout on: the RNG state must be restored too
    write_classify_jsonl(d / "train.jsonl", 48)
    write_classify_jsonl(d / "val.jsonl", 12, seed=1)
    return d


def train_args(d: Path, out: Path, mode: str, *extra: str) -> list[str]:
    """3 epochs of 12 steps (batch 4; with 2 ranks: 6 steps), last.ckpt every 5 steps and at epoch ends."""
    return ["train", "classify", "--model", str(d / "bert"), "--train", str(d / "train.jsonl"), "--val",
            str(d / "val.jsonl"), "--out", str(out), *mode.split(), "--batch-size", "4", "--epochs", "3",
            "--checkpoint-every", "5", "--val-every", "7", "--threads", "1", "--no-progress", "--log-every", "1",
            "--lr", "1e-3", *extra]


@pytest.mark.parametrize("mode", ["--full", "--full --ema 0.9",  # --ema: the average resumes with the weights
                                  pytest.param("--lora", marks=[pytest.mark.slow, needs_lora])])
def test_sigkill_then_resume_gives_the_same_weights(setup, tmp_path, monkeypatch, mode):
    d, cache = setup, tmp_path / "cache"
    run_in_process(train_args(d, tmp_path / "ref", mode), cache, monkeypatch)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *train_args(d, out, mode)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline, seen, inode = time.time() + 120, 0, None
    pick = random.SystemRandom()  # not the global RNG: the reference run just seeded it
    target = pick.randint(1, 5)  # kill after the 1st..5th checkpoint (steps 5, 10, 12=epoch end, 15, 20)
    while seen < target and proc.poll() is None and time.time() < deadline:
        now = last.stat().st_ino if last.is_file() else None  # each atomic save is a new file
        if now is not None and now != inode:
            seen, inode = seen + 1, now
        time.sleep(0.005)
    time.sleep(pick.uniform(0.0, 0.1))
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "weights.safetensors").exists()
    killed_at = torch.load(last, weights_only=True)["global_step"]

    run_in_process(train_args(d, out, mode, "--resume"), cache, monkeypatch)

    ref, got = load_file(str(tmp_path / "ref" / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"{k} differs after resuming from step {killed_at}"
    ref_last = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=True)
    got_last = torch.load(last, weights_only=True)
    assert ref_last["global_step"] == got_last["global_step"] == 36
    for k in ref_last["state_dict"]:  # the final (not only the best) weights agree too
        assert torch.equal(ref_last["state_dict"][k], got_last["state_dict"][k]), k
    if "--ema" in mode:  # the average went on from the checkpoint as if never stopped
        ref_ema, got_ema = ref_last["callbacks"]["WeightEMA"], got_last["callbacks"]["WeightEMA"]
        assert ref_ema["updates"] == got_ema["updates"] == 36
        for k in ref_ema["average"]:
            assert torch.equal(ref_ema["average"][k], got_ema["average"][k]), k
    print(f"killed after checkpoint {seen} (target {target}), at step {killed_at} of 36; resumed weights identical")


@pytest.mark.slow
def test_ddp_sigkill_then_resume_gives_the_same_weights(setup, tmp_path, monkeypatch):
    """2 gloo processes with dropout: every rank's RNG state and data position come back on resume."""
    d, cache = setup, tmp_path / "cache"
    ddp = ["--lora", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([sys.executable, "-m", "lightft", *train_args(d, tmp_path / "ref", *ddp)], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    script = tmp_path / "slow_cli.py"  # Lightning re-runs this file for rank 1, so it must be a file
    script.write_text(SLOW_CLI)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), *train_args(d, out, *ddp)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.SystemRandom().uniform(0.0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]
    res = subprocess.run([sys.executable, "-m", "lightft", *train_args(d, out, *ddp, "--resume")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_file(str(tmp_path / "ref" / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after resuming from step {killed_at}"
    print(f"DDP: killed at step {killed_at}; resumed weights identical")
