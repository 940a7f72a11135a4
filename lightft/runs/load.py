"""Loading a finished run for inference, without Lightning: the backbone with its adapters and trained
weights, the head's tensors and the task state.

A run folder holds only what training changed (lightft/runs/folder.py): LoRA factors and the head,
or every weight under --full. Rebuilding it means loading the base model, setting up the same
adapters (`prepare_backbone`), then laying the trained tensors of the run -- and of the runs it started
from with --init (a chain such as mlm -> squad -> bioasq) -- over it, oldest first. generate, fewshot,
export and eval start here; training uses `chain_state` for --init.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from lightft.checkpoint import load_checked
from lightft.errors import LightftError
from lightft.model import Transformer
from lightft.options import Options
from lightft.runs.backbone import load_backbone, prepare_backbone
from lightft.runs.defaults import resolve_auto
from lightft.runs.folder import RUN_FILE, WEIGHTS_FILE, is_run_dir, read_run, read_weights

BACKBONE, HEAD = "backbone.", "head."  # prefixes of the trained tensors in weights.safetensors


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run rebuilt for inference. `head` holds the task head's tensors (names without `head.`)."""

    folder: str
    task: str
    options: Options
    backbone: Transformer
    head: dict[str, torch.Tensor]
    task_state: dict[str, Any]
    base_model: str


def init_source(options: dict[str, Any]) -> Optional[str]:
    """The run whose weights a run started from: --init, or a run folder given as --model."""
    return options.get("init") or (options.get("model") if is_run_dir(options.get("model")) else None)


def chain_inputs(run_dir: Optional[str]) -> list[str]:
    """Every folder a run's weights are read from: the run, the runs it started from, their base models.
    An output must never replace one of them (lightft/runs/safe_output.py)."""
    found: list[str] = []
    while run_dir and is_run_dir(run_dir) and run_dir not in found:
        info = read_run(run_dir)
        found += [run_dir, info["base_model"]]
        run_dir = init_source(info["options"])
    return found


def chain_state(run_dir: str, task: str, own_shapes: Optional[dict[str, torch.Size]] = None,
                _seen: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The trained tensors of `run_dir` over those of the runs it started from (oldest first).

    Head tensors of a run of another task are left out (they belong to that task: an mlm run gives a
    qa run only its backbone), and so are head tensors whose shape differs from `own_shapes`
    (another label set): those stay freshly initialised, and a line says so. A run's own head replaces
    its ancestors' whole (a head is always saved whole), and head tensors `own_shapes` has no place for
    (the bias of a decoder classify head made before those heads lost it) are left out, with a line.
    """
    if not is_run_dir(run_dir):
        raise LightftError(f"--init {run_dir}: not a run folder (no {RUN_FILE})")
    resolved = str(Path(run_dir).resolve())
    if resolved in _seen:
        raise LightftError(f"{run_dir}/{RUN_FILE}: the run starts from itself (an --init / --model loop through "
                           f"{' -> '.join(_seen)}); the run folder is damaged")
    info = read_run(run_dir)
    parent = init_source(info["options"])
    state = chain_state(parent, task, own_shapes, _seen + (resolved,)) if parent else {}
    own = read_weights(Path(run_dir) / WEIGHTS_FILE)
    other_task = info["task"] != task
    skipped = [k for k, v in own.items() if k.startswith(HEAD) and
               (other_task or (own_shapes is not None and k in own_shapes and own_shapes[k] != v.shape))]
    extra = [k for k in own if k.startswith(HEAD) and k not in skipped and own_shapes is not None
             and k not in own_shapes]
    if skipped and own_shapes is not None:
        print(f"[init] head tensors of another task or shape left freshly initialised: {', '.join(skipped)}",
              file=sys.stderr)
    if extra:
        print(f"[init] {run_dir}: left out head tensors this run's head has no place for: {', '.join(extra)} "
              "(e.g. the bias of a decoder classify head made before those heads lost it, to match transformers)",
              file=sys.stderr)
    kept = {k: v for k, v in own.items() if k not in skipped and k not in extra}
    if any(k.startswith(HEAD) for k in kept):
        state = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    state.update(kept)
    return state


def load_run(run_dir: str, overrides: Optional[dict[str, Any]] = None, dtype: Optional[str] = None) -> LoadedRun:
    """Rebuild a trained run: base weights, the run's adapters, and every trained tensor of its chain.

    `overrides` replaces recorded options that do not change the weights (batch sizes, precision...);
    `dtype` loads the base weights in another dtype than the run trained with.
    """
    if not is_run_dir(run_dir):
        raise LightftError(f"{run_dir}: not a run folder (no {RUN_FILE})")
    info = read_run(run_dir)
    opts = Options.from_dict({**info["options"], **(overrides or {}), "compile": False}, f"{run_dir}/{RUN_FILE}")
    opts = resolve_auto(info["task"], opts, info["options"])  # an "auto" override keeps the run's value
    weights = Path(run_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise LightftError(f"{run_dir}: no {WEIGHTS_FILE}; the run did not finish (resume it with --resume)")
    backbone = load_backbone(info["base_model"], opts, dtype=dtype)
    torch.manual_seed(opts.seed)  # as in training: nothing random survives, every trained tensor is loaded
    prepare_backbone(backbone, opts)
    state = chain_state(run_dir, info["task"])
    trained = {k.removeprefix(BACKBONE): v for k, v in state.items() if k.startswith(BACKBONE)}
    load_checked(backbone, trained, str(weights))
    head = {k.removeprefix(HEAD): v for k, v in state.items() if k.startswith(HEAD)}
    return LoadedRun(folder=run_dir, task=info["task"], options=opts, backbone=backbone.eval(), head=head,
                     task_state=info.get("task_state", {}), base_model=info["base_model"])
