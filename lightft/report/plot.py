"""Curves of one or more runs against optimiser steps, and token-length histograms, drawn with matplotlib.

Panels: loss (training solid, drawn faint under its moving average when there are many points;
validation dashed with dots), learning rate, real tokens per second, then one panel per task metric
(every logged `val_*` other than the loss, or those asked for).
Several runs share the panels, one colour each, so two recipes compare at a glance. Figures are
built with matplotlib's object API (`Figure`, no pyplot and no global backend), so drawing never
opens a window or touches another figure in the same process.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional, Sequence

from lightft.errors import LightftError
from lightft.report.runfiles import RunFiles, check_metrics

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _figure(**kwargs: Any):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LightftError("plots need matplotlib: pip install 'lightft[plot]' (or pip install matplotlib)") from None
    return Figure(**kwargs)


def _draw(ax, points: list[tuple[int, float]], color: str, label: Optional[str], dashed: bool = False) -> None:
    steps, values = [s for s, _ in points], [v for _, v in points]
    style = dict(linestyle="--", marker="o", markersize=3.5) if dashed or len(points) == 1 else {}
    ax.plot(steps, values, color=color, linewidth=1.4, label=label, **style)


def smoothed(points: list[tuple[int, float]], weight: float = 0.6) -> list[tuple[int, float]]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for n, (step, value) in enumerate(points, start=1):
        avg = weight * avg + (1 - weight) * value
        out.append((step, avg / (1 - weight**n)))
    return out


def _label(run: RunFiles, runs: list[RunFiles]) -> str:
    """The run's folder name; the parent too when two runs share a name."""
    if sum(r.name == run.name for r in runs) > 1:
        return f"{run.path.resolve().parent.name}/{run.name}"
    return run.name


def curves_figure(runs: list[RunFiles], metrics: Optional[list[str]] = None):
    """The figure described in the module docstring; `metrics` (e.g. ["val_f1"]) replaces the default
    task-metric panels and must each be logged by at least one run."""
    if metrics:
        check_metrics(runs, metrics)
    else:
        metrics = list(dict.fromkeys(m for r in runs for m in r.task_metrics()))
    panels = ["loss", "learning rate", "tokens / s (real tokens)"] + metrics
    cols = 3 if len(panels) > 4 else 2
    rows = -(-len(panels) // cols)
    fig = _figure(figsize=(4.2 * cols, 2.9 * rows + 0.3))
    # fixed margins: a layout engine (constrained / tight) doubles the drawing time, paid by every training run
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.32 / (2.9 * rows + 0.3), bottom=0.5 / (2.9 * rows + 0.3),
                        hspace=0.45, wspace=0.28)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, title in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    loss_ax, lr_ax, tok_ax = axes[:3]
    for i, run in enumerate(runs):
        color, name = COLORS[i % len(COLORS)], _label(run, runs)
        if "train_loss" in run.log:  # one batch per logged point: noisy, so drawn faint under its moving average
            train = run.log["train_loss"]
            if len(train) > 8:
                loss_ax.plot([s for s, _ in train], [v for _, v in train], color=color, linewidth=0.8, alpha=0.3)
                _draw(loss_ax, smoothed(train), color, f"{name} train (smoothed)")
            else:
                _draw(loss_ax, train, color, f"{name} train")
        if "val_loss" in run.log:
            _draw(loss_ax, run.log["val_loss"], color, f"{name} val", dashed=True)
        lrs = run.learning_rates()
        for group, points in lrs.items():
            _draw(lr_ax, points, color, f"{name} {group.split('/')[-1]}" if len(lrs) > 1 else name)
        if "tok_s" in run.log:
            _draw(tok_ax, run.log["tok_s"], color, name)
        for ax, metric in zip(axes[3:], metrics):
            if metric in run.log:
                _draw(ax, run.log[metric], color, name, dashed=metric.startswith("val_"))
    for ax, title in zip(axes[3:], metrics):
        ax.set_title(title.removeprefix("val_") + (" (validation)" if title.startswith("val_") else ""), fontsize=10)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    loss_ax.legend(fontsize=7, loc="best")
    if len(runs) > 1 or len(runs[0].learning_rates()) > 1:
        lr_ax.legend(fontsize=7, loc="best")
    return fig


def lengths_figure(data: dict[str, Any]):
    """One bar histogram per split from run.json's data record (`lengths` of each split); None if none."""
    splits = [(s, d["lengths"]) for s, d in data.items() if isinstance(d, dict) and d.get("lengths", {}).get("n")]
    if not splits:
        return None
    fig = _figure(figsize=(4.2 * len(splits), 2.8))
    fig.subplots_adjust(left=0.08 / len(splits) ** 0.5, right=0.98, top=0.88, bottom=0.17, wspace=0.25)
    axes = fig.subplots(1, len(splits), squeeze=False).ravel()
    for ax, (split, h) in zip(axes, splits):
        edges, counts = h["edges"], h["counts"]
        ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
               color="#4c72b0", edgecolor="white", linewidth=0.5)
        if h["limit"] <= edges[-1]:
            ax.axvline(h["limit"], color="#d62728", linestyle="--", linewidth=1.2, label=f"--max-length {h['limit']}")
            ax.legend(fontsize=7)
        ax.set_title(f"{split}: {h['n']} examples, median {h['p50']}, p95 {h['p95']}, max {h['max']} tokens",
                     fontsize=9)
        ax.set_xlabel("tokens per example", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return fig


def png_bytes(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig, out: Path, dpi: int = 90, inputs: Sequence[Path] = ()) -> Path:
    """Write the figure as PNG through lightft/runs/safe_output.py: checked first (never one of the
    `inputs`), written to a temporary sibling and renamed, so `out` is never half written."""
    from lightft.runs.safe_output import check_output_file, write_output_file

    if out.suffix.lower() != ".png":
        raise LightftError(f"--out {out}: plots are written as PNG; give a file name ending in .png")
    checked = check_output_file(out, "--out", list(inputs))
    write_output_file(checked, png_bytes(fig, dpi), "--out")
    return out
