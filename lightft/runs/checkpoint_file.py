"""Checkpoint files without Lightning: atomic `torch.save`, weights-only loading, and their names.

`atomic_torch_save` writes `name.tmp-PID`, fsyncs it (unless `durable=False`) and renames it over
`name` (`lightft.checkpoint.write_atomic`), so a kill at any moment leaves either the old or the new
file, and a full disk is one line that keeps the old one. `load_checkpoint_file` uses
`torch.load(weights_only=True)`: a checkpoint holding pickled objects is refused, not executed.
Lightning's checkpoint IO (lightft/train/checkpointing.py) is built on these two.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lightft.checkpoint import write_atomic
from lightft.errors import LightftError

LAST, BEST = "last.ckpt", "best.ckpt"


def atomic_torch_save(obj: Any, path: Path, durable: bool = True) -> None:
    """torch.save through `write_atomic` (temporary sibling, fsync, rename); a full disk is one line.
    `durable=False` skips the fsyncs: still atomic for a killed process, not for a power loss."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: a full disk is an OSError, not torch's RuntimeError
            torch.save(obj, f)

    write_atomic(path, write, durable=durable)


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint loaded with weights_only=True; refusals and damage are one-line errors.
    `mmap=True` checks a checkpoint cheaply (tensors are mapped, not read)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise LightftError(f"{path}: checkpoint not found") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LightftError(f"{path}: refusing to load: the checkpoint holds more than tensors and plain values "
                           f"({first[:160]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise LightftError(f"{path}: damaged checkpoint ({str(e).splitlines()[0][:160]})") from None
