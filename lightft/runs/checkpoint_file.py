"""Checkpoint files without Lightning: atomic `torch.save`, weights-only loading, and their names.

`atomic_torch_save` writes `name.tmp-PID` and renames it over `name`, so a kill at any moment leaves
either the old or the new file (and fsyncs it first when the file must also survive a power loss). `load_checkpoint_file` uses
`torch.load(weights_only=True)`: a checkpoint holding pickled objects is refused, not executed.
Lightning's checkpoint IO (lightft/train/checkpointing.py) is built on these two.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lightft.errors import LightftError

LAST, BEST = "last.ckpt", "best.ckpt"


def atomic_torch_save(obj: Any, path: Path, durable: bool = True) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`.

    The rename alone makes the write atomic for a killed process: the old file or the new one,
    never half of one. `durable` also fsyncs the data before the rename and the folder after it,
    so the promise survives a power loss too; that costs about a second per few hundred MB, so it
    is kept for the files a resume depends on (`last.ckpt`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if not durable:
        return
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


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
