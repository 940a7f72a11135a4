#!/usr/bin/env python
"""Fault injection: kill `lightft train` and `lightft export` with SIGKILL or SIGTERM at random moments and
check that nothing is ever lost or mixed.

Every trial runs the real CLI in a subprocess on a tiny random BERT (--threads 1), over an output that is
either new or an earlier output being replaced (--overwrite / --force), and kills it at a random moment:
during start-up (a random time up to when it starts writing -- a temporary sibling appears or the
output is replaced -- as measured on an uninterrupted run), or once it writes (a random time up to the
end of the run). Training steps and export file writes are slowed (a sleep each) so kills land inside them.
After the kill the output must be **the complete old state** (byte for byte what was there before, or
nothing) **or the complete new state** (a run folder with its marker and run.json / an export equal to
the reference export), never a mixture; leftovers may lie beside it. Then the follow-up command runs:
`--resume` for a new, unfinished run, the same command again otherwise. It must succeed, name and
remove the leftovers, and end with the uninterrupted run's weights, bitwise (as tests/test_resume.py
checks), or the reference export.

    python scripts/fault_injection.py --train-trials 20 --export-trials 20
    python scripts/fault_injection.py --train-trials 2 --export-trials 2 --seed 1   # a quick look

One line per trial, then the counts; exit status 1 if any trial failed. tests/test_fault_injection.py
runs a few trials (and all of them when slow tests are on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The CLI with slower steps and file writes, so that kills land inside training and inside an export.
SLOW_CLI = """
import sys, time
import lightft.tasks.module as m
step = m.TaskModule.training_step
def slow_step(self, batch, batch_idx):
    time.sleep(float(sys.argv[1]))
    return step(self, batch, batch_idx)
m.TaskModule.training_step = slow_step
import safetensors.torch as st
save = st.save_file
def slow_save(*args, **kwargs):
    time.sleep(float(sys.argv[1]) * 4)
    return save(*args, **kwargs)
st.save_file = slow_save
from lightft.cli.main import main
main(sys.argv[2:])
"""


@dataclass
class Setup:
    work: Path
    model: Path
    train: Path
    val: Path
    cache: Path
    step_delay: float
    old_run: Path = Path()
    ref_run: Path = Path()
    old_export: Path = Path()
    ref_export: Path = Path()
    train_seconds: tuple[float, float] = (0.0, 0.0)  # until the output changes, until the end
    export_seconds: tuple[float, float] = (0.0, 0.0)


def env(setup: Setup) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(setup.cache), "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0"}


def train_args(setup: Setup, out: Path, seed: int = 42, *extra: str) -> list[str]:
    """2 epochs of 12 steps with dropout; last.ckpt every 3 steps and at epoch ends; validation every 5."""
    return ["train", "classify", "--model", str(setup.model), "--train", str(setup.train), "--val", str(setup.val),
            "--out", str(out), "--full", "--batch-size", "4", "--epochs", "2", "--checkpoint-every", "3",
            "--val-every", "5", "--threads", "1", "--no-progress", "--lr", "1e-3", "--seed", str(seed), *extra]


def export_args(run: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(run), "--out", str(out), "--merged", *extra]


def start(setup: Setup, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, str(setup.step_delay), *args], env=env(setup), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(setup: Setup, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = start(setup, args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def marker(path: Path) -> Optional[tuple[int, int]]:
    """What identifies the output folder itself: (inode, marker inode); None while there is none."""
    try:
        return os.stat(path).st_ino, os.stat(path / ".lightft").st_ino
    except OSError:
        return None


def changed(out: Path, before: Optional[tuple[int, int]]) -> bool:
    """The command started writing: its temporary sibling exists, or the output was replaced."""
    return marker(out) != before or any(out.parent.glob(f".{out.name}.lightft-tmp-*"))


def timed(setup: Setup, args: list[str], out: Path) -> tuple[float, float]:
    """Run to the end; return the seconds until the command started writing and until the end."""
    before, t0 = marker(out), time.monotonic()
    proc, first = start(setup, args), None
    while proc.poll() is None:
        if first is None and changed(out, before):
            first = time.monotonic() - t0
        time.sleep(0.01)
    total = time.monotonic() - t0
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed: {' '.join(args)}\n{err[-3000:]}")
    return (first if first is not None else total), total


def files_of(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with the sha256 of its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.lightft-*"))


def prepare(work: Path, step_delay: float) -> Setup:
    """Tiny model and data, the reference run and export, and the earlier run / export a trial replaces."""
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    work.mkdir(parents=True, exist_ok=True)
    setup = Setup(work=work, model=make_tiny_model(work / "bert", hidden_dropout_prob=0.1),
                  train=write_classify_jsonl(work / "train.jsonl", 48), val=write_classify_jsonl(work / "val.jsonl", 12,
                                                                                             seed=1),
                  cache=work / "cache", step_delay=step_delay)
    setup.old_run, setup.ref_run = work / "old_run", work / "ref_run"
    old = run(setup, train_args(setup, setup.old_run, 7))  # another seed: other weights than the new run
    if old.returncode != 0:
        raise SystemExit(f"could not train the earlier run:\n{old.stderr[-3000:]}")
    setup.train_seconds = timed(setup, train_args(setup, setup.ref_run), setup.ref_run)
    setup.old_export, setup.ref_export = work / "old_export", work / "ref_export"
    old = run(setup, export_args(setup.old_run, setup.old_export))
    if old.returncode != 0:
        raise SystemExit(f"could not export the earlier run:\n{old.stderr[-3000:]}")
    setup.export_seconds = timed(setup, export_args(setup.ref_run, setup.ref_export), setup.ref_export)
    return setup


def kill_at_random(setup: Setup, args: list[str], out: Path, seconds: tuple[float, float], sig: int,
                   rng: random.Random) -> tuple[subprocess.CompletedProcess, str]:
    """Start the command and kill it: at a random moment of start-up (before it writes, as timed on the
    reference) or, once it writes, at a random moment of the rest of the run."""
    until_change, total = seconds
    before = marker(out)
    t0 = time.monotonic()
    proc = start(setup, args)
    if rng.random() < 1 / 3:
        when, stage = rng.uniform(0, until_change), "start-up"
        while proc.poll() is None and time.monotonic() - t0 < when:
            time.sleep(0.005)
    else:
        when, stage = rng.uniform(0, max(total - until_change, 0.1)), "writing"
        while proc.poll() is None and not changed(out, before):
            time.sleep(0.005)
        t1 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t1 < when:
            time.sleep(0.005)
    elapsed = time.monotonic() - t0
    if proc.poll() is None:
        proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(args, proc.returncode, out_text, err), f"{stage} +{elapsed:.2f}s"


def train_trial(setup: Setup, n: int, sig: int, replace: bool, rng: random.Random) -> tuple[bool, str, str]:
    out = setup.work / f"train_trial_{n}"
    if replace:
        shutil.copytree(setup.old_run, out, symlinks=True)
    old_files = files_of(out)
    args = train_args(setup, out, 42, *(["--overwrite"] if replace else []))
    killed, when = kill_at_random(setup, args, out, setup.train_seconds, sig, rng)
    rc, after = killed.returncode, files_of(out)
    expected_rc = {signal.SIGTERM: (143, -15), signal.SIGKILL: (-9,)}[sig]
    if rc not in expected_rc + (0,):
        return False, "?", f"{when}: exit {rc}, expected {expected_rc} (or 0 when it had finished): " \
                           f"{killed.stderr.strip().splitlines()[-1:]}"
    if after == old_files:
        state, follow = "old", args
    else:
        info = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
        kind = json.loads((out / ".lightft").read_text()).get("kind") if (out / ".lightft").is_file() else None
        if kind != "run" or info.get("options", {}).get("seed") != 42:
            return False, "mixed", f"{when}: exit {rc}, the output is neither the old state nor a new run: {sorted(after)}"
        finished = info.get("status") == "finished" and (out / "weights.safetensors").is_file()
        state = "new, finished" if finished else "new, unfinished"
        follow = None if finished else train_args(setup, out, 42, "--resume")
    if rc == 0 and state != "new, finished":
        return False, state, f"{when}: exit 0 but the run is {state}"
    note = ""
    if follow is not None:
        beside = leftovers(out)
        res = run(setup, follow)
        if res.returncode != 0:
            return False, state, f"{when}: exit {rc}, {state}; the follow-up failed: {res.stderr.strip()[-600:]}"
        named = [b for b in beside if not b.endswith("lightft-lock")]
        if any(b not in res.stderr for b in named):
            return False, state, f"{when}: the follow-up did not name the leftovers {named}"
        partial = [p.name for p in out.rglob("*.tmp*")]
        if leftovers(out) or partial:
            return False, state, f"{when}: leftovers remain after the follow-up: {leftovers(out) + partial}"
        note = f"; {'--resume' if '--resume' in follow else 'rerun'} ok" + (f", cleaned {len(named)}" if named else "")
    if not same_weights(out, setup.ref_run):
        return False, state, f"{when}: exit {rc}, {state}{note}; the final weights differ from the uninterrupted run"
    shutil.rmtree(out)
    return True, state, f"{when}: exit {rc}, {state}{note}; weights identical"


def export_trial(setup: Setup, n: int, sig: int, replace: bool, rng: random.Random) -> tuple[bool, str, str]:
    out = setup.work / f"export_trial_{n}"
    if replace:
        shutil.copytree(setup.old_export, out, symlinks=True)
    old_files, ref = files_of(out), {k: v for k, v in files_of(setup.ref_export).items() if k != ".lightft"}
    args = export_args(setup.ref_run, out, *(["--force"] if replace else []))
    killed, when = kill_at_random(setup, args, out, setup.export_seconds, sig, rng)
    rc, after = killed.returncode, files_of(out)
    if after == old_files:
        state = "old"
    elif {k: v for k, v in after.items() if k != ".lightft"} == ref and ".lightft" in after:
        state = "new"
    else:
        return False, "mixed", f"{when}: exit {rc}, the output is neither the old nor the new export: {sorted(after)}"
    if rc == 0 and state != "new":
        return False, state, f"{when}: exit 0 but the export is {state}"
    beside = [b for b in leftovers(out) if not b.endswith("lightft-lock")]
    res = run(setup, export_args(setup.ref_run, out, "--force"))
    if res.returncode != 0:
        return False, state, f"{when}: exit {rc}, {state}; the rerun failed: {res.stderr.strip()[-600:]}"
    if any(b not in res.stderr for b in beside) or leftovers(out):
        return False, state, f"{when}: leftovers {beside} not named or not removed by the rerun: {leftovers(out)}"
    if {k: v for k, v in files_of(out).items() if k != ".lightft"} != ref:
        return False, state, f"{when}: the rerun's export differs from the reference"
    shutil.rmtree(out)
    return True, state, f"{when}: exit {rc}, {state}; rerun ok" + (f", cleaned {len(beside)}" if beside else "")


def run_trials(train_trials: int, export_trials: int, seed: int, work: Path, step_delay: float = 0.05) -> Counter:
    """Run the trials (alternating SIGKILL / SIGTERM and new / replaced outputs); print and count them."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    setup = prepare(work, step_delay)
    print(f"[setup] reference train: output changes after {setup.train_seconds[0]:.1f}s, ends after "
          f"{setup.train_seconds[1]:.1f}s; export: {setup.export_seconds[0]:.1f}s / {setup.export_seconds[1]:.1f}s "
          f"({time.monotonic() - t0:.0f}s for the set-up)", flush=True)
    counts: Counter = Counter()
    for kind, n_trials, trial in (("train", train_trials, train_trial), ("export", export_trials, export_trial)):
        for n in range(n_trials):
            sig = (signal.SIGKILL, signal.SIGTERM)[n % 2]
            replace = (n + n // 2) % 2 == 1  # every 4 trials: each signal on a new and on a replaced output
            ok, state, line = trial(setup, n, sig, replace, rng)
            counts[(kind, "ok" if ok else "FAILED")] += 1
            counts[(kind, signal.Signals(sig).name, state)] += 1
            print(f"{kind:6} {n:2} {signal.Signals(sig).name:7} {'replace' if replace else 'new':7} "
                  f"{'ok    ' if ok else 'FAILED'} {line}", flush=True)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-trials", type=int, default=20)
    ap.add_argument("--export-trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="Seed of the kill moments (default: random, printed).")
    ap.add_argument("--step-delay", type=float, default=0.05, help="Seconds of sleep per training step.")
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one, removed).")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"[fault injection] seed {seed}; load {os.getloadavg()[0]:.1f}", flush=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="lightft-faults-"))
    try:
        counts = run_trials(a.train_trials, a.export_trials, seed, work, a.step_delay)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n[counts]")
    for key in sorted(counts, key=str):
        print(f"  {' / '.join(key)}: {counts[key]}")
    failed = sum(v for k, v in counts.items() if k[-1] == "FAILED")
    print(f"[fault injection] {'FAILED: ' + str(failed) + ' trial(s)' if failed else 'every trial passed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
