"""Task heads in exported model folders: the `transformers` class a run exports as, and reading a head back.

Write side (`lightft export --merged`): `plan_export` looks up the family's `TASK_CLASSES` table
(lightft/families/*.py, data) for the run's task and turns the trained head into that class's
checkpoint keys and config.json entries (`architectures`, `id2label`, `pad_token_id`...), so
`AutoModelForSequenceClassification` & co. load the export with its head. Where lightft's head has
no exact equivalent (mean pooling, `cls` pooling on BERT, a head with a bias where the class has
none), the plan says why, and the head goes to `lightft_head.safetensors` beside a plain backbone.

Read side: `read_task_head(folder)` returns the head of an export (or of any checkpoint of a known
task class, e.g. a `BertForSequenceClassification` from elsewhere) under TaskModule names, with
the task state (label names, pooling) needed to rebuild the module. `lightft_task.json` records
the task of every export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from lightft.checkpoint import PathLike, _open, missing_config, read_json, weight_files
from lightft.errors import LightftError
from lightft.families import family_for
from lightft.families.common import TaskClass

HEAD_FILE, TASK_FILE = "lightft_head.safetensors", "lightft_task.json"


def task_classes(hf_config: dict[str, Any]) -> dict[str, TaskClass]:
    """task -> TaskClass for the model type of this config.json (empty when the family has none)."""
    return getattr(family_for(hf_config), "TASK_CLASSES", {}).get(hf_config.get("model_type", ""), {})


@dataclass
class ExportPlan:
    """How a merged export is written: backbone prefix, head tensors by checkpoint key, config.json keys."""

    config: dict[str, Any]  # keys set over the base config.json (always `architectures`)
    prefix: Optional[str] = None  # backbone key prefix (None: the one the base checkpoint used)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # checkpoint key -> tensor
    moved: set[str] = field(default_factory=set)  # backbone names (lightft) not written under the prefix
    head_file: dict[str, torch.Tensor] = field(default_factory=dict)  # unmapped head: lightft_head.safetensors
    unmapped: Optional[str] = None  # why the head has no transformers class (None: it has one)


def plan_export(hf_config: dict[str, Any], task: str, task_state: dict[str, Any],
                module_state: dict[str, torch.Tensor], pad_id: Optional[int] = None) -> ExportPlan:
    """The export of a trained module: its task class when the head maps exactly, else the lightft head file.

    `module_state` holds TaskModule names: `backbone.*` (LoRA merged) and `head.*`. `pad_id` is the id
    the last-token classifiers of decoders look for to find each row's last token.
    """
    head = {k: v for k, v in module_state.items() if k.startswith("head.")}
    tc = task_classes(hf_config).get(task)
    reason = _why_not(tc, task, task_state, head, hf_config, pad_id)
    if reason is not None:
        base_arch = getattr(family_for(hf_config), "ARCHITECTURE", {}).get(hf_config.get("model_type"))
        return ExportPlan(config={"architectures": [base_arch]} if base_arch else {}, unmapped=reason,
                          head_file={k.removeprefix("head."): v for k, v in head.items()})
    assert tc is not None
    config: dict[str, Any] = {"architectures": [tc.architecture]}
    if tc.labels:
        names = list(task_state["label_names"])
        config.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
                      num_labels=len(names))
        if task == "classify":
            config["problem_type"] = "single_label_classification"
    if tc.needs_pad_id:
        config["pad_token_id"] = pad_id
    tensors = {tc.keys[k]: v for k, v in module_state.items() if tc.keys.get(k)}
    moved = {k.removeprefix("backbone.") for k in tc.keys if k.startswith("backbone.")}
    return ExportPlan(config=config, prefix=tc.prefix, tensors=tensors, moved=moved)


def _why_not(tc: Optional[TaskClass], task: str, task_state: dict[str, Any], head: dict[str, torch.Tensor],
             hf_config: dict[str, Any], pad_id: Optional[int]) -> Optional[str]:
    """One line on why this head has no exact transformers class, or None when it has one."""
    model_type = hf_config.get("model_type")
    if tc is None:
        return f"transformers has no {model_type} class for lightft's {task} head"
    pooling = task_state.get("pooling")
    if tc.pooling is not None and pooling != tc.pooling:
        return f"{tc.architecture} pools with '{tc.pooling}', and this run pooled with '{pooling}'"
    extra = sorted(k for k in head if k not in tc.keys)
    if extra:
        return f"{tc.architecture} has no place for {', '.join(extra)} (e.g. a bias its layer lacks)"
    if tc.needs_pad_id and pad_id is None:
        return f"{tc.architecture} finds each row's last token by pad_token_id, and the tokenizer has no pad or EOS id"
    return None


def export_template(folder: PathLike) -> Optional[str]:
    """The prompt template an instruct run trained with, as its export records it in lightft_task.json
    ('chat', 'alpaca' or a custom text); None for other folders, so generate decodes an export of an
    instruct run as it decodes the run."""
    path = Path(folder) / TASK_FILE
    if not path.is_file():
        return None
    info = read_json(path)
    state = info.get("task_state")
    template = state.get("template") if info.get("task") == "instruct" and isinstance(state, dict) else None
    return template if isinstance(template, str) else None


@dataclass
class SavedHead:
    """A trained head read from a folder: what `load_run` needs to rebuild the task module around a backbone."""

    task: str
    task_state: dict[str, Any]  # e.g. label_names, pooling, head_bias (classify)
    tensors: dict[str, torch.Tensor]  # TaskModule names: head.*, and backbone.* a task class keeps outside
    source: str  # the file the tensors came from, for messages
    options: dict[str, Any] = field(default_factory=dict)  # the run's options (lightft_task.json), if known


def read_task_head(folder: PathLike) -> Optional[SavedHead]:
    """The task head a model folder holds, or None for a plain backbone.

    Reads `lightft_head.safetensors` (+ `lightft_task.json`) when present, else the head of a known
    task class named by config.json's `architectures` (our exports, and such checkpoints from
    elsewhere: their label names come from `id2label`). Causal LMs carry their LM head in the
    backbone and have no separate head here.
    """
    path = Path(folder)
    if not (path / "config.json").exists() and (path / "adapter_config.json").is_file():
        raise missing_config(path)  # an --adapter export: no base weights to put the head on
    info = read_json(path / TASK_FILE) if (path / TASK_FILE).is_file() else None
    if info is not None and not isinstance(info.get("task"), str):
        raise LightftError(f"{path / TASK_FILE}: missing 'task'; re-export the run")
    if (path / HEAD_FILE).is_file():
        if info is None:
            raise LightftError(f"{path}: {HEAD_FILE} without {TASK_FILE} (which names its task); re-export the run")
        from safetensors.torch import load_file

        try:
            tensors = {f"head.{k}": v for k, v in load_file(str(path / HEAD_FILE)).items()}
        except Exception as e:  # safetensors has its own error type for damaged headers
            raise LightftError(f"{path / HEAD_FILE}: not a readable safetensors file "
                               f"({str(e).splitlines()[0][:120]}); re-export the run") from None
        return SavedHead(info["task"], dict(info.get("task_state") or {}), tensors, str(path / HEAD_FILE),
                         dict(info.get("options") or {}))
    hf = read_json(path / "config.json")
    arch = (hf.get("architectures") or [None])[0]
    found = [(task, tc) for task, tc in task_classes(hf).items() if tc.architecture == arch and tc.head_keys()]
    if not found:
        return None
    task, tc = found[0]
    tensors = _read_keys(path, tc)
    if info is not None and info["task"] == task:
        return SavedHead(task, dict(info.get("task_state") or {}), tensors, str(path), dict(info.get("options") or {}))
    return SavedHead(task, _state_from_config(hf, task, tc, tensors, path), tensors, str(path))


def _read_keys(path: Path, tc: TaskClass) -> dict[str, torch.Tensor]:
    """The class's head tensors from the folder's safetensors, under TaskModule names."""
    wanted = {theirs: ours for ours, theirs in tc.head_keys().items()}
    found: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        with _open(file) as f:
            for key in f.keys():
                if key in wanted:
                    found[wanted[key]] = f.get_tensor(key)
    missing = sorted(theirs for theirs, ours in wanted.items() if ours not in found)
    if missing:
        raise LightftError(f"{path}: config.json says {tc.architecture}, but the weights lack {', '.join(missing)}")
    return found


def _state_from_config(hf: dict[str, Any], task: str, tc: TaskClass, tensors: dict[str, torch.Tensor],
                       path: Path) -> dict[str, Any]:
    """Task state of a task-class checkpoint without lightft_task.json: labels from id2label, the class's pooling."""
    state: dict[str, Any] = {}
    if tc.labels:
        rows = tensors["head.out.weight"].shape[0]
        id2label = hf.get("id2label") or {}
        names = [id2label.get(str(i), id2label.get(i)) for i in range(rows)]
        if any(n is None for n in names):
            raise LightftError(f"{path}/config.json: id2label does not name all {rows} labels of the head")
        state["label_names"] = [str(n) for n in names]
    if task == "classify":
        state.update(pooling=tc.pooling, head_bias="head.out.bias" in tensors)
    return state
