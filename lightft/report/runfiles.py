"""Read a run folder's files for plots and reports: run.json, metrics.json, the CSV log, samples.json.

The CSV log is Lightning's `logs/metrics.csv`: one column per logged name, one row per logging
call, a value only in the columns that call logged. A resumed run keeps the log written before the
resume as `metrics.part1.csv`, `metrics.part2.csv`, ...; those are read first, and where a later
part logs a step again (training continued from a checkpoint older than the last logged step)
the later value wins. Everything here is plain Python: no Lightning, no matplotlib.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lightft.errors import LightftError

RUN_FILE, METRICS_FILE, SAMPLES_FILE = "run.json", "metrics.json", "samples.json"
LOG_DIR, LOG_FILE = "logs", "metrics.csv"

Series = list[tuple[int, float]]  # (optimiser step, value), sorted by step


@dataclass
class RunFiles:
    """What a run folder holds, as read from its files (see the module docstring)."""

    path: Path
    info: dict[str, Any]  # run.json: task, base_model, options, task_state, data
    log: dict[str, Series]  # logged name -> its values by step
    metrics: Optional[dict[str, Any]] = None  # metrics.json (None: the run has not finished)
    samples: Optional[dict[str, Any]] = None  # samples.json (None: not written by this run)
    log_files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def task(self) -> str:
        return str(self.info.get("task", "?"))

    def learning_rates(self) -> dict[str, Series]:
        """The LearningRateMonitor columns (`lr-AdamW/pg1`, ...), parameter groups with the same
        schedule as an earlier one left out, so a plot shows each distinct learning rate once."""
        out: dict[str, Series] = {}
        for name in sorted(k for k in self.log if k.startswith("lr-")):
            if all(self.log[name] != kept for kept in out.values()):
                out[name] = self.log[name]
        return out

    def task_metrics(self) -> list[str]:
        """Validation metrics other than the loss (accuracy, f1, perplexity ...), in log order."""
        return [k for k in self.log if k.startswith("val_") and k != "val_loss"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LightftError(f"{path}: not valid JSON ({e}); the run folder is damaged") from None
    if not isinstance(data, dict):
        raise LightftError(f"{path}: expected a JSON object at the top level; the run folder is damaged")
    return data


def log_files(run_dir: Path) -> list[Path]:
    """The CSV log parts in the order they were written: metrics.part1.csv, part2, ..., metrics.csv."""
    folder = run_dir / LOG_DIR
    parts = sorted(folder.glob("metrics.part*.csv"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    last = folder / LOG_FILE
    return parts + ([last] if last.is_file() else [])


def read_csv_log(path: Path) -> dict[str, Series]:
    """One Lightning CSV log: name -> [(step, value)], skipping the empty cells of other calls."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LightftError(f"{path}: cannot be read as CSV ({e})") from None
    series: dict[str, Series] = {}
    for n, row in enumerate(rows, start=2):
        step = row.get("step")
        if step in (None, ""):
            raise LightftError(f"{path}:{n}: no 'step' value; this is not a Lightning CSV log")
        for name, value in row.items():
            if name in ("step", "epoch") or value in (None, ""):
                continue
            try:
                series.setdefault(name, []).append((int(float(step)), float(value)))
            except ValueError:
                raise LightftError(f"{path}:{n}: column {name!r} holds {value!r}, not a number") from None
    return series


def merge_parts(parts: list[dict[str, Series]]) -> dict[str, Series]:
    """Join the logs of a resumed run: a later part replaces an earlier one from its first step on."""
    merged: dict[str, Series] = {}
    for part in parts:
        for name, points in part.items():
            start = min(s for s, _ in points)
            merged[name] = [p for p in merged.get(name, []) if p[0] < start] + points
    return {k: sorted(v, key=lambda p: p[0]) for k, v in merged.items()}


def read_run_files(path: str | Path, need_log: bool = True) -> RunFiles:
    """Read a run folder; a folder that is not a run, or a run with nothing logged yet, is a one-line error."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise LightftError(f"{run_dir}: no such folder; give the --out folder of a `lightft train` run")
    if not (run_dir / RUN_FILE).is_file():
        raise LightftError(f"{run_dir}: not a run folder (no {RUN_FILE}); give the --out folder of a "
                           "`lightft train` run")
    info = _read_json(run_dir / RUN_FILE)
    files = log_files(run_dir)
    log = merge_parts([read_csv_log(f) for f in files])
    if need_log and not log:
        where = files[-1] if files else run_dir / LOG_DIR / LOG_FILE
        raise LightftError(f"{run_dir}: no logged steps yet ({where} {'has no rows' if files else 'is missing'}); "
                           "training writes the log every --log-every steps (Lightning flushes it every 100 "
                           "steps and at the end), so wait for the first ones or lower --log-every")
    metrics = _read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else None
    samples = _read_json(run_dir / SAMPLES_FILE) if (run_dir / SAMPLES_FILE).is_file() else None
    return RunFiles(run_dir, info, log, metrics, samples, files)


def check_metrics(runs: list[RunFiles], names: list[str]) -> None:
    """Every asked-for metric must be logged by at least one run; otherwise name what is logged."""
    logged = sorted({k for r in runs for k in r.log})
    for name in names:
        if not any(name in r.log for r in runs):
            where = runs[0].path if len(runs) == 1 else f"{len(runs)} runs"
            raise LightftError(f"unknown metric {name!r}: {where} logged no such column; logged metrics: "
                               f"{', '.join(logged)}")
